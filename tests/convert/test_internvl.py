"""InternVL3 base checkpoints (transformers' -hf layout, old and new, and OpenGVLab's original) -> Self1E folders with
`[SEG]` added and a fresh segmentation head, plus the key mapping of InternVL3-8B-sized checkpoints on the meta
device."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.batches import REFERENCE_RECORD
from helpers.tokenizer import tiny_qwen2_tokenizer
from safetensors.torch import load_file, save_file
from transformers import InternVLConfig, InternVLForConditionalGeneration

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.convert import (
    convert_internvl_checkpoint,
    convert_reference_checkpoint,
    initial_segmentation_head,
    reference_checkpoint_shapes,
)
from transformers_self1e.convert.__main__ import main as convert_main
from transformers_self1e.convert.folder_writer import check_conversion
from transformers_self1e.convert.internvl import (
    convert_internvl_hf_tensor,
    self1e_config_from_internvl_chat,
    self1e_config_from_internvl_hf,
    with_seg_token_row,
)
from transformers_self1e.convert.reference import convert_reference_tensor
from transformers_self1e.presets import (
    INTERNVL3_IMAGE_TOKEN_ID,
    INTERNVL3_SEG_TOKEN_ID,
    INTERNVL3_VOCAB_SIZE,
    internvl3_8b_config,
    tiny_config,
)

META = REFERENCE_RECORD / "meta.json"
EMBEDDINGS = ("model.language_model.embed_tokens.weight", "lm_head.weight")
INTERNVL_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>")


def internvl_hf_config(vocab_size: int, image_token_id: int) -> InternVLConfig:
    """transformers' InternVL config with the tiny sizes."""
    tiny = tiny_config()
    return InternVLConfig(
        vision_config=tiny.vision_config.to_dict(),
        text_config={**tiny.text_config.to_dict(), "vocab_size": vocab_size},
        image_token_id=image_token_id,
        image_seq_length=tiny.image_tokens_per_tile,
        tie_word_embeddings=False,
    )


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A tiny `InternVLForConditionalGeneration` saved in shards, with an InternVL tokenizer (no [SEG] yet)."""
    folder = tmp_path_factory.mktemp("internvl-hf")
    tokenizer = tiny_qwen2_tokenizer(extra_added_tokens=INTERNVL_TOKENS)
    torch.manual_seed(0)
    config = internvl_hf_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
    InternVLForConditionalGeneration(config).save_pretrained(folder, max_shard_size="200KB")
    tokenizer.save_pretrained(folder)
    return folder


def source_weights(folder) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under transformers' module names, as transformers itself loads them."""
    return InternVLForConditionalGeneration.from_pretrained(folder).state_dict()


@pytest.fixture(scope="module")
def converted_hf(hf_checkpoint, tmp_path_factory):
    return convert_internvl_checkpoint(hf_checkpoint, tmp_path_factory.mktemp("converted"))


def test_hf_checkpoint_converts_with_seg_row_and_new_head(hf_checkpoint, converted_hf):
    source = source_weights(hf_checkpoint)
    vocab_size = source["lm_head.weight"].shape[0]
    model = Self1EForSegmentation.from_pretrained(converted_hf)
    assert (model.config.seg_token_id, model.config.text_config.vocab_size) == (vocab_size, vocab_size + 1)
    state = model.state_dict()
    for name, tensor in source.items():
        if name in EMBEDDINGS:
            # Old rows kept, the [SEG] row is the mean of the others (reference: mean_resizing).
            assert torch.equal(state[name][:vocab_size], tensor), name
            torch.testing.assert_close(state[name][vocab_size], tensor.mean(0))
        else:
            assert torch.equal(state[name], tensor), name
    head = {name: t for name, t in state.items() if name.startswith("seg_head.")}
    assert set(state) == set(source) | set(head)
    # N(0, 0.02) weights and zero biases, as the reference's from_pretrained initialises the missing head.
    weights = torch.cat([t.flatten() for name, t in head.items() if name.endswith("weight")])
    assert abs(weights.std().item() - 0.02) < 1e-3 and abs(weights.mean().item()) < 1e-3
    assert all(not t.any() for name, t in head.items() if name.endswith("bias"))


def test_hf_folder_gets_a_processor_with_seg_and_segments(hf_checkpoint, converted_hf):
    processor = Self1EProcessor.from_pretrained(converted_hf)
    model = Self1EForSegmentation.from_pretrained(converted_hf).eval()
    processor.check_model_config(model.config)
    assert processor.seg_token_id == model.config.seg_token_id == len(tiny_qwen2_tokenizer(INTERNVL_TOKENS))
    image = PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (90, 140, 3), dtype=np.uint8))
    result = model.segment(image, ["the red car", "a dog"], processor=processor)
    assert result.masks.shape == (2, 90, 140)


def test_hf_checkpoint_under_module_names_and_head_seed(hf_checkpoint, converted_hf, tmp_path):
    # `save_pretrained` stores `language_model.model.*`, `vision_tower.*`...; the module names work as well.
    stored = {name for path in hf_checkpoint.glob("*.safetensors") for name in load_file(path)}
    assert {"language_model.lm_head.weight", "vision_tower.embeddings.cls_token"} <= stored
    folder = tmp_path / "module-names"
    folder.mkdir()
    save_file(source_weights(hf_checkpoint), folder / "model.safetensors")
    (folder / "config.json").write_text((hf_checkpoint / "config.json").read_text())

    expected = Self1EForSegmentation.from_pretrained(converted_hf).state_dict()
    same_seed = Self1EForSegmentation.from_pretrained(convert_internvl_checkpoint(folder, tmp_path / "a")).state_dict()
    other_seed = Self1EForSegmentation.from_pretrained(
        convert_internvl_checkpoint(folder, tmp_path / "b", seed=1)
    ).state_dict()
    for name, tensor in expected.items():
        assert torch.equal(same_seed[name], tensor), name
    assert not torch.equal(other_seed["seg_head.output_mlp.fc1.weight"], expected["seg_head.output_mlp.fc1.weight"])
    assert not (tmp_path / "a" / "processor_config.json").exists()  # no tokenizer in the source, no processor


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory):
    """The record's reference checkpoint without the SELF1E head: OpenGVLab's original InternVL layout."""
    folder = tmp_path_factory.mktemp("internvl-original")
    state = load_file(REFERENCE_RECORD / "official_model.safetensors")
    names = sorted(name for name in state if not name.startswith("combine_decode_proj"))
    save_file({name: state[name] for name in names[::2]}, folder / "model-00001-of-00002.safetensors")
    save_file({name: state[name] for name in names[1::2]}, folder / "model-00002-of-00002.safetensors")
    meta = json.loads(META.read_text())
    (folder / "config.json").write_text(json.dumps(meta["official_config"]))
    (folder / "added_tokens.json").write_text(json.dumps({"<img>": 91, "</img>": 92, "<IMG_CONTEXT>": 90}))
    return folder


def test_original_layout_converts_like_the_reference_conversion(original_checkpoint, tmp_path):
    assert convert_main(["internvl", "--checkpoint", str(original_checkpoint), "--out", str(tmp_path / "out")]) == 0
    model = Self1EForSegmentation.from_pretrained(tmp_path / "out")
    assert (model.config.image_token_id, model.config.seg_token_id, model.config.text_config.vocab_size) == (
        90,
        100,
        101,
    )
    reference = Self1EForSegmentation.from_pretrained(
        convert_reference_checkpoint(REFERENCE_RECORD / "official_model.safetensors", META, tmp_path / "reference")
    ).state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith("seg_head."):
            continue
        if name in EMBEDDINGS:
            assert torch.equal(tensor[:100], reference[name]) and torch.equal(tensor[100], reference[name].mean(0))
        else:
            assert torch.equal(tensor, reference[name]), name


def test_bfloat16_check_only_and_errors(original_checkpoint, tmp_path, capsys):
    out = convert_internvl_checkpoint(original_checkpoint, tmp_path / "bf16", dtype=torch.bfloat16)
    assert {t.dtype for path in out.glob("*.safetensors") for t in load_file(path).values()} == {torch.bfloat16}

    assert (
        convert_main(
            ["internvl", "--checkpoint", str(original_checkpoint), "--out", str(tmp_path / "no"), "--check-only"]
        )
        == 0
    )
    assert "fits the config" in capsys.readouterr().out and not (tmp_path / "no").exists()

    # An existing folder keeps its files unless --overwrite; then the converted model's files are replaced.
    (tmp_path / "bf16" / "notes.txt").write_text("kept")
    arguments = ["internvl", "--checkpoint", str(original_checkpoint), "--out", str(tmp_path / "bf16")]
    assert convert_main(arguments) == 2
    assert "is not empty" in capsys.readouterr().err
    assert {t.dtype for path in out.glob("*.safetensors") for t in load_file(path).values()} == {torch.bfloat16}
    assert convert_main([*arguments, "--overwrite"]) == 0
    assert {t.dtype for path in out.glob("*.safetensors") for t in load_file(path).values()} == {torch.float32}
    assert (out / "notes.txt").read_text() == "kept"

    # A SELF1E checkpoint already has a head: converting it as a base model is refused before anything is written.
    self1e = tmp_path / "self1e"
    self1e.mkdir()
    save_file(load_file(REFERENCE_RECORD / "official_model.safetensors"), self1e / "model.safetensors")
    (self1e / "config.json").write_text((original_checkpoint / "config.json").read_text())
    (self1e / "added_tokens.json").write_text((original_checkpoint / "added_tokens.json").read_text())
    assert convert_main(["internvl", "--checkpoint", str(self1e), "--out", str(tmp_path / "x")]) == 2
    assert "both in the checkpoint and newly initialised: seg_head." in capsys.readouterr().err

    (tmp_path / "added_tokens.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="model_type 'llava'; expected 'internvl' or 'internvl_chat'"):
        convert_internvl_checkpoint(tmp_path, tmp_path / "y")


def test_tokenizer_that_disagrees_with_the_vocabulary_is_refused(hf_checkpoint, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for path in hf_checkpoint.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["vocab_size"] += 8  # padded embedding rows: [SEG] would not be the first new row
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.seg_token_id=\d+ but the tokenizer's \[SEG\] is"):
        convert_internvl_checkpoint(folder, tmp_path / "out", check_only=True)


class TestInternVL3_8BOnTheMetaDevice:
    """Key mapping and shapes of InternVL3-8B-sized checkpoints end to end, without allocating a single weight."""

    def self1e_8b(self):
        return internvl3_8b_config()

    def test_hf_layout(self):
        preset = self.self1e_8b()
        text = {**preset.text_config.to_dict(), "vocab_size": INTERNVL3_VOCAB_SIZE}
        internvl = InternVLConfig(
            vision_config=preset.vision_config.to_dict(),
            text_config=text,
            image_token_id=INTERNVL3_IMAGE_TOKEN_ID,
            tie_word_embeddings=False,
        )
        with torch.device("meta"):
            source = InternVLForConditionalGeneration(internvl)
        shapes = {name: tuple(t.shape) for name, t in source.state_dict().items()}
        config = self1e_config_from_internvl_hf(internvl.to_dict())
        assert (config.seg_token_id, config.text_config.vocab_size) == (
            INTERNVL3_SEG_TOKEN_ID,
            INTERNVL3_VOCAB_SIZE + 1,
        )
        self.check(shapes, convert_internvl_hf_tensor, config, expected_count=len(shapes))

    def test_original_layout(self):
        preset = self.self1e_8b()
        base = internvl3_8b_config(text_config={"vocab_size": INTERNVL3_VOCAB_SIZE})
        shapes = reference_checkpoint_shapes(base, segmentation_head=False)
        internvl_chat = {
            "vision_config": {
                "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                "image_size": 448, "patch_size": 14, "qkv_bias": True, "qk_normalization": False,
                "norm_type": "layer_norm", "layer_norm_eps": 1e-6, "hidden_act": "gelu",
            },
            "llm_config": {**base.text_config.to_dict(), "architectures": ["Qwen2ForCausalLM"]},
            "downsample_ratio": 0.5, "ps_version": "v2", "select_layer": -1, "force_image_size": 448,
        }  # fmt: skip
        config = self1e_config_from_internvl_chat(internvl_chat, INTERNVL3_IMAGE_TOKEN_ID)
        assert config.seg_token_id == INTERNVL3_SEG_TOKEN_ID
        assert config.text_config.vocab_size == preset.text_config.vocab_size
        # qkv splits in three: one more key per fused weight and bias.
        self.check(shapes, convert_reference_tensor, config, expected_count=len(shapes) + 4 * 24)

    def check(self, shapes, convert, config, expected_count):
        head = {name: tuple(t.shape) for name, t in initial_segmentation_head(config)("meta").items()}
        written = check_conversion(shapes, with_seg_token_row(convert), config, head)
        with torch.device("meta"):
            model = Self1EForSegmentation(config)
        assert written == set(model.state_dict()) and len(written) == expected_count + len(head)
        assert sum(t.numel() for t in model.state_dict().values()) > 7.9e9
