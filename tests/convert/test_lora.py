"""Reference checkpoints with LoRA left unmerged (as the reference training saves them) and PEFT adapter folders."""

import json
from pathlib import Path

import pytest
import torch
from helpers.batches import REFERENCE_RECORD
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import Qwen2ForCausalLM

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.convert import (
    LoraMerger,
    compare_with_record,
    convert_reference_checkpoint,
    load_reference_record,
    reference_checkpoint_shapes,
)
from transformers_self1e.convert.__main__ import main as convert_main
from transformers_self1e.convert.checkpoint_files import TensorInfo
from transformers_self1e.convert.folder_writer import check_conversion
from transformers_self1e.convert.reference import convert_reference_tensor
from transformers_self1e.presets import internvl3_8b_config, tiny_config

CHECKPOINT = REFERENCE_RECORD / "official_model.safetensors"
META = REFERENCE_RECORD / "meta.json"
PARITY = 1e-4
RANK = 4
# The reference's `wrap_llm_lora` targets (ANDYZAQ/SELF1E model/internvl3/modeling_internvl_chat.py), a subset here.
TARGETS = ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]
LLM_LINEARS = tuple(
    f".{name}" for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
)


def peft_language_model(state: dict, lora_alpha: float, seed: int | None) -> Qwen2ForCausalLM:
    """The record's language model wrapped by PEFT as the reference training does; random factors unless `seed` is
    None (PEFT's own init: B = 0, a no-op)."""
    language_model = Qwen2ForCausalLM(tiny_config().text_config)
    prefix = "language_model."
    language_model.load_state_dict({name[len(prefix) :]: t for name, t in state.items() if name.startswith(prefix)})
    wrapped = get_peft_model(
        language_model, LoraConfig(r=RANK, lora_alpha=lora_alpha, target_modules=TARGETS, task_type="CAUSAL_LM")
    )
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in wrapped.named_parameters():
                if "lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return wrapped


def merged_by_hand(state: dict, lora_state: dict, scaling: float) -> dict:
    """The reference checkpoint with `W + scaling * B @ A` written out for every adapted weight."""
    merged = dict(state)
    for name, lora_a in lora_state.items():
        if ".lora_A." not in name:
            continue
        module = name.split(".lora_A.")[0].replace("base_model.model.", "")
        lora_b = lora_state[name.replace(".lora_A.", ".lora_B.")]
        weight = f"language_model.{module}.weight"
        merged[weight] = state[weight] + scaling * (lora_b @ lora_a)
    return merged


def save_sharded(state: dict, folder, shards: int = 3) -> None:
    """Round-robin over sorted names, so that LoRA factors and their weights land in different shards."""
    folder.mkdir(parents=True)
    names = sorted(state)
    weight_map = {}
    for index in range(shards):
        file_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = names[index::shards]
        save_file({name: state[name].contiguous() for name in part}, folder / file_name)
        weight_map.update(dict.fromkeys(part, file_name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def training_checkpoint(state: dict, wrapped) -> dict:
    """What the reference training saves before merging: the wrapped language model's keys under `language_model.`."""
    checkpoint = {name: t for name, t in state.items() if not name.startswith("language_model.")}
    checkpoint.update({f"language_model.{name}": t.detach().clone() for name, t in wrapped.state_dict().items()})
    return checkpoint


def converted_state(folder) -> dict:
    return Self1EForSegmentation.from_pretrained(folder).state_dict()


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-6, atol=1e-7, msg=name)


@pytest.fixture(scope="module")
def state() -> dict:
    return load_file(CHECKPOINT)


def test_training_checkpoint_has_the_reference_key_names(state):
    checkpoint = training_checkpoint(state, peft_language_model(state, 2 * RANK, seed=0))
    for name in (
        "language_model.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
        "language_model.base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias",
        "language_model.base_model.model.model.layers.1.mlp.down_proj.lora_A.default.weight",
        "language_model.base_model.model.model.layers.1.mlp.down_proj.lora_B.default.weight",
        "language_model.base_model.model.model.layers.0.self_attn.k_proj.weight",
        "language_model.base_model.model.lm_head.weight",
    ):
        assert name in checkpoint, name


def test_sharded_checkpoint_with_unmerged_lora_matches_merging_by_hand(tmp_path, state):
    wrapped = peft_language_model(state, lora_alpha=2 * RANK, seed=0)
    save_sharded(training_checkpoint(state, wrapped), tmp_path / "training")
    expected_checkpoint = merged_by_hand(state, wrapped.state_dict(), scaling=2.0)
    save_file(expected_checkpoint, tmp_path / "merged.safetensors")

    out = convert_reference_checkpoint(tmp_path / "training", META, tmp_path / "from_lora")
    expected = converted_state(convert_reference_checkpoint(tmp_path / "merged.safetensors", META, tmp_path / "plain"))
    assert_same_weights(converted_state(out), expected)
    # PEFT's own merge agrees with the formula.
    merged = wrapped.merge_and_unload().state_dict()
    torch.testing.assert_close(
        expected["model.language_model.layers.1.mlp.down_proj.weight"], merged["model.layers.1.mlp.down_proj.weight"]
    )


def test_zero_lora_keeps_the_record_parity(tmp_path, state):
    # PEFT initialises B to zero: merging changes nothing, and the converted model still reproduces the record.
    save_sharded(training_checkpoint(state, peft_language_model(state, 2 * RANK, seed=None)), tmp_path / "training")
    out = convert_reference_checkpoint(tmp_path / "training", META, tmp_path / "out")
    model = Self1EForSegmentation.from_pretrained(out, attn_implementation="eager")
    errors = compare_with_record(model, load_reference_record(REFERENCE_RECORD))
    assert max(errors.values()) < PARITY, errors


def test_lora_alpha_option_of_the_command(tmp_path, state):
    wrapped = peft_language_model(state, lora_alpha=3.0, seed=1)
    save_sharded(training_checkpoint(state, wrapped), tmp_path / "training", shards=2)
    save_file(merged_by_hand(state, wrapped.state_dict(), scaling=3.0 / RANK), tmp_path / "merged.safetensors")
    arguments = ["reference", "--reference-config", str(META)]
    assert convert_main([*arguments, "--checkpoint", str(tmp_path / "training"), "--out", str(tmp_path / "a")]) == 0
    assert (
        convert_main([*arguments, "--checkpoint", str(tmp_path / "merged.safetensors"), "--out", str(tmp_path / "b")])
        == 0
    )
    # Without --lora-alpha the reference's alpha = 2 r is assumed, which is not what this adapter was trained with.
    assert not torch.allclose(
        converted_state(tmp_path / "a")["model.language_model.layers.0.self_attn.q_proj.weight"],
        converted_state(tmp_path / "b")["model.language_model.layers.0.self_attn.q_proj.weight"],
    )
    command = [
        *arguments,
        "--checkpoint",
        str(tmp_path / "training"),
        "--lora-alpha",
        "3",
        "--out",
        str(tmp_path / "c"),
    ]
    assert convert_main(command) == 0
    assert_same_weights(converted_state(tmp_path / "c"), converted_state(tmp_path / "b"))
    assert convert_main([*command[:-1], str(tmp_path / "d"), "--check-only"]) == 0
    assert not (tmp_path / "d").exists()


def test_vision_lora_on_the_fused_qkv_is_merged_before_the_split(tmp_path, state):
    # `wrap_backbone_lora` targets `attn.qkv`: the merged fused weight is what gets split into q, k and v.
    generator = torch.Generator().manual_seed(2)
    qkv = state["vision_model.encoder.layers.0.attn.qkv.weight"]
    lora_a, lora_b = (
        torch.randn(RANK, qkv.shape[1], generator=generator),
        torch.randn(qkv.shape[0], RANK, generator=generator),
    )
    checkpoint = {}
    for name, tensor in state.items():
        if name.startswith("vision_model."):
            name = name.replace("vision_model.", "vision_model.base_model.model.", 1)
            name = name.replace(".attn.qkv.", ".attn.qkv.base_layer.") if ".layers.0.attn.qkv." in name else name
        checkpoint[name] = tensor
    prefix = "vision_model.base_model.model.encoder.layers.0.attn.qkv"
    checkpoint[f"{prefix}.lora_A.default.weight"], checkpoint[f"{prefix}.lora_B.default.weight"] = lora_a, lora_b
    save_file(checkpoint, tmp_path / "training.safetensors")
    merged = dict(state)
    merged["vision_model.encoder.layers.0.attn.qkv.weight"] = qkv + 2.0 * lora_b @ lora_a
    save_file(merged, tmp_path / "merged.safetensors")

    out = convert_reference_checkpoint(tmp_path / "training.safetensors", META, tmp_path / "a")
    expected = convert_reference_checkpoint(tmp_path / "merged.safetensors", META, tmp_path / "b")
    assert_same_weights(converted_state(out), converted_state(expected))


def test_peft_adapter_folder_of_the_language_model(tmp_path, state):
    wrapped = peft_language_model(state, lora_alpha=6.0, seed=3)
    wrapped.save_pretrained(tmp_path / "adapter")
    save_file(merged_by_hand(state, wrapped.state_dict(), scaling=6.0 / RANK), tmp_path / "merged.safetensors")

    out = convert_reference_checkpoint(CHECKPOINT, META, tmp_path / "a", lora_adapter=tmp_path / "adapter")
    expected = convert_reference_checkpoint(tmp_path / "merged.safetensors", META, tmp_path / "b")
    assert_same_weights(converted_state(out), converted_state(expected))


class TestBrokenLora:
    def test_factor_without_its_partner(self, tmp_path, state):
        checkpoint = training_checkpoint(state, peft_language_model(state, 2 * RANK, seed=0))
        del checkpoint["language_model.base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight"]
        save_file(checkpoint, tmp_path / "broken.safetensors")
        with pytest.raises(ValueError, match="layers.0.self_attn.v_proj: lora_B is missing"):
            convert_reference_checkpoint(tmp_path / "broken.safetensors", META, tmp_path / "out")
        assert not (tmp_path / "out").exists()

    def test_factors_that_do_not_fit_their_weight(self, tmp_path, state):
        checkpoint = training_checkpoint(state, peft_language_model(state, 2 * RANK, seed=0))
        checkpoint["language_model.base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight"] = torch.zeros(
            3, RANK
        )
        save_file(checkpoint, tmp_path / "broken.safetensors")
        with pytest.raises(ValueError, match=r"layers.0.mlp.down_proj: B \(3, 4\) @ A \(4, 128\) does not give"):
            convert_reference_checkpoint(tmp_path / "broken.safetensors", META, tmp_path / "out")

    def test_several_adapters(self, tmp_path, state):
        checkpoint = training_checkpoint(state, peft_language_model(state, 2 * RANK, seed=0))
        renamed = {
            name.replace(".default.", ".other.") if "layers.1." in name else name: t for name, t in checkpoint.items()
        }
        save_file(renamed, tmp_path / "broken.safetensors")
        with pytest.raises(ValueError, match=r"several LoRA adapters \(\['default', 'other'\]\)"):
            convert_reference_checkpoint(tmp_path / "broken.safetensors", META, tmp_path / "out")

    def test_dora_adapter_is_refused(self, tmp_path, state):
        wrapped = peft_language_model(state, 2 * RANK, seed=0)
        wrapped.save_pretrained(tmp_path / "adapter")
        config_path = tmp_path / "adapter" / "adapter_config.json"
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "use_dora": True}))
        with pytest.raises(ValueError, match="only plain LoRA adapters"):
            convert_reference_checkpoint(CHECKPOINT, META, tmp_path / "out", lora_adapter=tmp_path / "adapter")


def test_internvl3_8b_training_checkpoint_on_the_meta_device():
    """The key mapping of a SELF1E-8B training checkpoint with rank-64 LoRA on every LLM linear, from names and shapes
    alone (no weight is allocated)."""
    # The released tokenizer has [SEG] and the leftover [SEGT]: two rows more than InternVL3's 151674.
    config = internvl3_8b_config(text_config={"vocab_size": 151676})
    rank, header = 64, {}
    for name, shape in reference_checkpoint_shapes(config).items():
        module, _, kind = name.rpartition(".")
        if module.endswith(LLM_LINEARS):
            # get_peft_model(language_model): the adapted linear keeps its weights as `base_layer`, next to A and B.
            module = module.replace("language_model.", "language_model.base_model.model.", 1)
            name = f"{module}.base_layer.{kind}"
            if kind == "weight":
                header[f"{module}.lora_A.default.weight"] = TensorInfo(Path("unread"), (rank, shape[1]))
                header[f"{module}.lora_B.default.weight"] = TensorInfo(Path("unread"), (shape[0], rank))
        elif name.startswith("language_model."):
            name = name.replace("language_model.", "language_model.base_model.model.", 1)
        header[name] = TensorInfo(Path("unread"), shape)
    assert "language_model.base_model.model.model.layers.27.mlp.down_proj.lora_B.default.weight" in header

    merger = LoraMerger.from_header(header)
    assert len(merger.pairs) == len(LLM_LINEARS) * config.text_config.num_hidden_layers
    shapes = {name: info.shape for name, info in header.items()}
    written = check_conversion(shapes, merger.wrap(convert_reference_tensor), config)
    with torch.device("meta"):
        model = Self1EForSegmentation(config)
    assert written == set(model.state_dict())
