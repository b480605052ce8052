"""The example scripts: the RefCOCO recipe parses its arguments; the synthetic one trains, saves and evaluates."""

import json
import runpy
from pathlib import Path

import pytest
import torch
from helpers.batches import SampleSpec, make_batch, tiny_model
from helpers.pairs import random_image

from transformers_self1e import Self1EForSegmentation, Self1EProcessor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> dict:
    """The globals of an example script, run as a module (its `main` not called)."""
    return runpy.run_path(str(EXAMPLES / name))


def test_finetune_refcoco_help(capsys):
    script = example("finetune_refcoco.py")
    with pytest.raises(SystemExit) as exit_info:
        script["main"](["--help"])
    assert exit_info.value.code == 0
    assert "--refer-root" in capsys.readouterr().out
    # 8 GPUs x 4 samples x 5 accumulation steps = the paper's batch of 160.
    assert script["gradient_accumulation_steps"](160, per_device_batch_size=4, world_size=8) == 5


def test_finetune_synthetic_trains_saves_and_evaluates(tmp_path):
    sizes = ["--tile-size", "112", "--patch-size", "14", "--vision-width", "32", "--vision-depth", "1"]
    sizes += ["--text-width", "32", "--text-depth", "1", "--text-heads", "2", "--text-kv-heads", "1"]
    arguments = ["--out", str(tmp_path), "--num-samples", "4", "--eval-samples", "2", "--vocab-size", "300"]
    example("finetune_synthetic.py")["main"]([*arguments, *sizes, "--max-steps", "2", "--batch-size", "2"])

    model = Self1EForSegmentation.from_pretrained(tmp_path)
    processor = Self1EProcessor.from_pretrained(tmp_path)
    assert model.config.text_config.hidden_size == 32 and model.config.tile_size == 112
    result = model.segment(random_image(60, 90), "the red circle", processor=processor)
    assert result.masks.shape == (1, 60, 90) and result.masks.dtype == torch.bool
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["metrics"]["num_samples"] == 2 and report["seed"] == 1


def test_finetune_synthetic_is_reproducible_from_its_seed(tmp_path):
    sizes = ["--tile-size", "32", "--patch-size", "8", "--vision-width", "16", "--vision-depth", "1"]
    sizes += ["--text-width", "16", "--text-depth", "1", "--text-heads", "2", "--text-kv-heads", "1"]
    arguments = ["--num-samples", "4", "--eval-samples", "1", "--vocab-size", "300", "--image-size", "64"]
    arguments += ["--max-steps", "2", "--batch-size", "2", *sizes]
    script = example("finetune_synthetic.py")
    for name in ("first", "second"):
        script["main"](["--out", str(tmp_path / name), *arguments])
    first, second = (
        Self1EForSegmentation.from_pretrained(tmp_path / name).state_dict() for name in ("first", "second")
    )
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_finetune_synthetic_continues_an_init_model(tmp_path):
    sizes = ["--tile-size", "32", "--patch-size", "8", "--vision-width", "16", "--vision-depth", "1"]
    sizes += ["--text-width", "16", "--text-depth", "1", "--text-heads", "2", "--text-kv-heads", "1"]
    arguments = ["--num-samples", "4", "--eval-samples", "1", "--image-size", "64", "--max-steps", "2"]
    arguments += ["--batch-size", "2"]
    script = example("finetune_synthetic.py")
    script["main"](["--out", str(tmp_path / "first"), "--vocab-size", "300", *arguments, *sizes])
    # Size flags are ignored: the model, its tokenizer and its tile come from the folder being continued.
    second = ["--out", str(tmp_path / "second"), "--init-model", str(tmp_path / "first"), "--text-width", "64"]
    script["main"]([*second, *arguments, "--expressions-per-image", "2", "--no-target-rate", "0.5"])

    first, continued = (Self1EForSegmentation.from_pretrained(tmp_path / name) for name in ("first", "second"))
    assert continued.config.to_diff_dict() | {"_name_or_path": ""} == first.config.to_diff_dict() | {
        "_name_or_path": ""
    }
    first_weights, continued_weights = first.state_dict(), continued.state_dict()
    assert continued_weights.keys() == first_weights.keys()
    assert not all(torch.equal(first_weights[key], continued_weights[key]) for key in first_weights)
    tokenizers = (Self1EProcessor.from_pretrained(tmp_path / name).tokenizer for name in ("first", "second"))
    assert next(tokenizers).get_vocab() == next(tokenizers).get_vocab()


def test_grown_language_model_starts_as_the_same_function(tmp_path):
    deepen = example("finetune_synthetic.py")["deepen_language_model"]
    model = tiny_model()
    depth = model.config.text_config.num_hidden_layers
    grown = deepen(model, depth + 2).eval()
    assert grown.config.text_config.num_hidden_layers == len(grown.model.language_model.layers) == depth + 2
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in model.parameters())

    batch = make_batch([SampleSpec(grid=(1, 1), n_seg=2), SampleSpec(grid=(2, 1))])
    with torch.no_grad():
        before, after = model(**batch.model_inputs()), grown(**batch.model_inputs())
    torch.testing.assert_close(after.logits, before.logits)
    for grown_masks, masks in zip(after.pred_masks, before.pred_masks, strict=True):
        torch.testing.assert_close(grown_masks, masks)
    # The new layers are trainable, not frozen at the identity.
    assert all(p.requires_grad for p in grown.model.language_model.layers[depth:].parameters())

    with pytest.raises(ValueError, match="must exceed"):
        deepen(model, depth)
    with pytest.raises(ValueError, match="--init-model"):
        example("finetune_synthetic.py")["main"](["--out", str(tmp_path), "--grow-text-depth", "4"])


def test_grid_position_code_makes_row_and_column_linearly_readable():
    code = example("finetune_synthetic.py")["grid_position_code"](16, 96)
    rows, columns = torch.arange(256) // 16, torch.arange(256) % 16
    features = torch.cat([code, torch.ones(256, 1)], dim=1).double()
    for coordinate in (rows, columns):
        fit = torch.linalg.pinv(features) @ coordinate[:, None].double()
        assert (features @ fit).squeeze().sub(coordinate).abs().max() < 0.05
    with pytest.raises(ValueError, match="divisible by 4"):
        example("finetune_synthetic.py")["grid_position_code"](16, 30)


def test_grid_position_code_is_added_to_the_patch_positions_only():
    model = tiny_model()
    embeddings = model.model.vision_tower.embeddings.position_embeddings
    with torch.no_grad():
        embeddings.normal_()
    before = embeddings.detach().clone()
    example("finetune_synthetic.py")["add_grid_position_code"](model)
    added = embeddings.detach()[0, 1:] - before[0, 1:]
    torch.testing.assert_close(embeddings.detach()[0, 0], before[0, 0])
    torch.testing.assert_close(added.norm(dim=-1), before[0, 1:].norm(dim=-1).mean().expand(added.shape[0]))
