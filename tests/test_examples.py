"""The example scripts: the RefCOCO recipe parses its arguments; the synthetic one trains, saves and evaluates."""

import json
import runpy
from pathlib import Path

import pytest
import torch
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


def test_finetune_synthetic_grows_only_an_init_model(tmp_path):
    # The growth itself is tested with the package's training code (tests/training/test_model_growth.py).
    with pytest.raises(ValueError, match="--init-model"):
        example("finetune_synthetic.py")["main"](["--out", str(tmp_path), "--grow-text-depth", "4"])
