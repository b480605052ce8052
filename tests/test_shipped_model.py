"""The shipped small SELF1E (`assets/self1e-tiny-synthetic`) and its examples: it really segments held-out samples,
loads from a clean interpreter, from a copy of its folder and in bf16, and `self1e demo` writes its PNGs."""

import json
import re
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.remote_code import run_without_package

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.cli import main as cli_main
from transformers_self1e.data import SyntheticConfig, make_synthetic_referring_dataset
from transformers_self1e.demo import (
    DEMO_EXAMPLES,
    SHIPPED_MODEL,
    load_demo_examples,
    mask_iou,
    read_mask,
    write_demo_examples,
)
from transformers_self1e.evaluation.evaluate import evaluate_referring, evaluate_text_blind
from transformers_self1e.visualize import display_scale

# Held-out samples of a seed no training stage or benchmark draws (the model's scores on the benchmark's samples are
# in docs/shipped-model.md, written by benchmarks/synthetic_quality.py).
CI_SEED = 2718
CI_SAMPLES = 120
# The release bars for gIoU and cIoU; a looser bar for N-acc, which rests on about ten no-target samples here.
FLOORS = {"giou": 0.85, "ciou": 0.85, "n_acc": 0.8}
# A model, processor or post-processing that loses the sentence can do no better than the text-blind answer (every
# object of the image), which `evaluate_text_blind` scores on the same samples; reading the sentence must beat it
# by a wide margin.
ABOVE_TEXT_BLIND = 0.3


@pytest.fixture(scope="module")
def shipped():
    model = Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval()
    return model, Self1EProcessor.from_pretrained(SHIPPED_MODEL)


def test_shipped_folder_is_small_and_self_contained():
    files = {path.name: path.stat().st_size for path in SHIPPED_MODEL.iterdir() if path.is_file()}
    assert sum(files.values()) <= 25 * 10**6
    for name in ("config.json", "model.safetensors", "README.md", "modeling_self1e.py", "processor_config.json"):
        assert name in files
    config = json.loads((SHIPPED_MODEL / "config.json").read_text())
    assert config["image_feature_path"] == "residual_amplifier"
    assert config["segmentation_attention"] == "bidirectional_image_with_seg"


@pytest.fixture(scope="module")
def held_out(shipped):
    model, _ = shipped
    return make_synthetic_referring_dataset(CI_SAMPLES, CI_SEED, SyntheticConfig(image_size=model.config.tile_size))


def test_shipped_model_reads_the_sentence(shipped, held_out):
    model, processor = shipped
    metrics = evaluate_referring(model, processor, held_out)["metrics"]
    blind = evaluate_text_blind(held_out)["metrics"]
    assert all(metrics[key] >= floor for key, floor in FLOORS.items()), metrics
    assert all(metrics[key] >= blind[key] + ABOVE_TEXT_BLIND for key in ("giou", "ciou")), (metrics, blind)


def test_an_untrained_model_fails_the_bar(shipped, held_out):
    model, processor = shipped
    torch.manual_seed(0)
    untrained = Self1EForSegmentation(model.config).eval()
    assert evaluate_referring(untrained, processor, held_out)["metrics"]["giou"] < FLOORS["giou"]


def test_shipped_examples_match_the_generator(tmp_path):
    shipped_examples = load_demo_examples()
    image_size = PIL.Image.open(DEMO_EXAMPLES / shipped_examples[0].image).width
    regenerated = write_demo_examples(tmp_path, seed=shipped_examples[0].seed, image_size=image_size)
    assert regenerated == shipped_examples
    for example in shipped_examples:
        assert torch.equal(read_mask(DEMO_EXAMPLES / example.gt), read_mask(tmp_path / example.gt))
        shipped_pixels = np.asarray(PIL.Image.open(DEMO_EXAMPLES / example.image))
        assert np.array_equal(shipped_pixels, np.asarray(PIL.Image.open(tmp_path / example.image)))


def test_demo_writes_masks_and_overlays(tmp_path, capsys, shipped):
    model, processor = shipped
    assert cli_main(["demo", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    examples = load_demo_examples()
    ious = []
    for example in examples:
        mask = read_mask(tmp_path / f"{example.name}-mask.png")
        image = PIL.Image.open(DEMO_EXAMPLES / example.image)
        assert torch.equal(mask, model.segment(image, example.prompt, processor=processor).masks[0])
        overlay = PIL.Image.open(tmp_path / f"{example.name}-overlay.png")
        scale = display_scale(image.size)  # enlarged, with the legend below
        assert overlay.width >= image.width * scale and overlay.height > image.height * scale
        ious.append(mask_iou(mask, read_mask(DEMO_EXAMPLES / example.gt)))
        assert f"IoU {ious[-1]:.3f}" in printed
    assert f"mean IoU {np.mean(ious):.3f}" in printed
    assert (tmp_path / "demo.png").is_file()


def test_shipped_model_in_bf16_agrees_with_float32(shipped):
    model, processor = shipped
    bf16 = Self1EForSegmentation.from_pretrained(SHIPPED_MODEL, dtype=torch.bfloat16).eval()
    assert bf16.dtype == torch.bfloat16
    for example in load_demo_examples():
        image = PIL.Image.open(DEMO_EXAMPLES / example.image)
        reference = model.segment(image, example.prompt, processor=processor).masks[0]
        low_precision = bf16.segment(image, example.prompt, processor=processor).masks[0]
        assert mask_iou(low_precision, reference) >= 0.9


def test_copied_folder_loads_with_remote_code_in_a_clean_interpreter(tmp_path, shipped):
    model, processor = shipped
    copy = tmp_path / "elsewhere" / "my-self1e"
    shutil.copytree(SHIPPED_MODEL, copy)
    example = load_demo_examples()[0]
    image_path = DEMO_EXAMPLES / example.image
    expected = model.segment(PIL.Image.open(image_path), example.prompt, processor=processor).masks
    torch.save(expected, tmp_path / "expected.pt")
    script = f"""
        import PIL.Image
        import torch
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained({str(copy)!r}, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained({str(copy)!r}, trust_remote_code=True)
        assert "transformers_modules" in type(model).__module__
        result = model.segment(PIL.Image.open({str(image_path)!r}), {example.prompt!r}, processor=processor)
        assert torch.equal(result.masks, torch.load({str(tmp_path / "expected.pt")!r}))
        """
    result = run_without_package(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_readme_names_shipped_example_files():
    readme = (DEMO_EXAMPLES.parents[3] / "README.md").read_text()
    named = set(re.findall(r"src/transformers_self1e/assets/examples/([\w.-]+\.png)", readme))
    assert named and all((DEMO_EXAMPLES / name).is_file() for name in named)
