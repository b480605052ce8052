"""evaluate_referring and `self1e evaluate`: metrics recomputed by hand from `model.segment` masks, breakdowns, the
JSON report, saved datasets and schema rows."""

import json
import math
import random

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from helpers.pairs import tiny_model_and_processor

from transformers_self1e.cli import main
from transformers_self1e.data import (
    SyntheticConfig,
    encode_rle,
    make_synthetic_referring_dataset,
    rows_to_dataset,
    segmentation_row,
)
from transformers_self1e.evaluation import evaluate_referring
from transformers_self1e.evaluation.evaluate import evaluate_mask_grid, evaluate_text_blind

CONFIG = SyntheticConfig(image_size=112, no_target_rate=0.3)


@pytest.fixture(scope="module")
def model_and_processor():
    """The tiny model with a random segmentation head (a fresh one predicts zero logits), so masks are partial."""
    model, processor = tiny_model_and_processor()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.seg_head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model, processor


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic_referring_dataset(6, seed=5, config=CONFIG)


def metrics_by_hand(predictions: list[torch.Tensor], gts: list[np.ndarray]) -> dict:
    intersections = [int((pred.numpy() & gt).sum()) for pred, gt in zip(predictions, gts)]
    unions = [int((pred.numpy() | gt).sum()) for pred, gt in zip(predictions, gts)]
    ious = [1.0 if union == 0 else inter / union for inter, union in zip(intersections, unions)]
    no_target = [not gt.any() for gt in gts]
    empty = [not pred.any() for pred in predictions]
    return {
        "ciou": sum(intersections) / sum(unions),
        "giou": sum(ious) / len(ious),
        "n_acc": sum(e for e, n in zip(empty, no_target) if n) / sum(no_target),
        "t_acc": sum(not e for e, n in zip(empty, no_target) if not n) / (len(gts) - sum(no_target)),
        "num_samples": len(gts),
        "num_no_target": sum(no_target),
    }


def test_metrics_equal_those_of_the_segment_masks(model_and_processor, dataset):
    model, processor = model_and_processor
    results = evaluate_referring(model, processor, dataset)
    predictions = [model.segment(row["image"], row["expression"], processor=processor).masks[0] for row in dataset]
    gts = [np.asarray(row["mask"]) > 0 for row in dataset]
    expected = metrics_by_hand(predictions, gts)
    # The sample mixes hits, misses and no-target rows, so no metric is trivially 0 or 1.
    assert 0 < expected["ciou"] < 1 and 0 < expected["num_no_target"] < len(gts)
    for name, value in expected.items():
        assert results["metrics"][name] == pytest.approx(value, rel=1e-4), name
    assert results["num_images"] == len(dataset) and results["wall_time_s"] > 0


def test_breakdown_groups_add_up_to_the_whole(model_and_processor, dataset):
    model, processor = model_and_processor
    results = evaluate_referring(model, processor, dataset)
    assert set(results["breakdown"]) == {"target_size_class", "expression_kind"}
    for column, groups in results["breakdown"].items():
        assert set(groups) == set(dataset[column])
        for count in ("num_samples", "num_no_target", "num_target"):
            assert sum(group[count] for group in groups.values()) == results["metrics"][count]
    # A group is scored on its rows alone.
    no_target_rows = [row for row in dataset if row["expression_kind"] == "no_target"]
    alone = evaluate_referring(model, processor, no_target_rows)["metrics"]
    assert results["breakdown"]["expression_kind"]["no_target"]["giou"] == pytest.approx(alone["giou"])


def test_schema_rows_score_like_the_synthetic_rows(model_and_processor, dataset, tmp_path):
    model, processor = model_and_processor
    rows = []
    for index, row in enumerate(dataset):
        path = tmp_path / f"{index}.png"
        row["image"].save(path)
        mask = encode_rle(np.asarray(row["mask"]) > 0)
        rows.append(segmentation_row(path, row["expression"], mask, "referring", "synthetic", random.Random(index)))
    schema = evaluate_referring(model, processor, rows_to_dataset(rows))
    synthetic = evaluate_referring(model, processor, dataset)
    assert schema["metrics"] == synthetic["metrics"] and schema["breakdown"] == {}


def test_cli_writes_the_report(model_and_processor, dataset, tmp_path, capsys):
    model, processor = model_and_processor
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    arguments = ["evaluate", "--model", str(tmp_path / "model"), "--image-size", "112", "--threshold", "0.4"]

    assert main([*arguments, "--dataset", "synthetic[:3]", "--seed", "7", "--out", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert "cIoU" in capsys.readouterr().out
    expected = evaluate_referring(
        model,
        processor,
        make_synthetic_referring_dataset(3, seed=7, config=SyntheticConfig(image_size=112)),
        threshold=0.4,
    )
    # NaN (a metric without samples to average, such as N-acc without no-target samples) is written as null.
    nan_as_null = {name: None if math.isnan(value) else value for name, value in expected["metrics"].items()}
    assert report["metrics"] == pytest.approx(nan_as_null)
    assert report["model"] == str((tmp_path / "model").resolve()) and report["dataset"] == "synthetic[:3]"
    assert report["seed"] == 7 and report["threshold"] == 0.4 and report["wall_time_s"] > 0
    assert sum(group["num_samples"] for group in report["breakdown"]["expression_kind"].values()) == 3

    saved = tmp_path / "saved"
    DatasetDict({"train": make_synthetic_referring_dataset(2, seed=0), "validation": dataset}).save_to_disk(saved)
    out = tmp_path / "saved.json"
    assert main([*arguments, "--dataset", f"{saved}[:4]", "--split", "validation", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"]["num_samples"] == 4 and report["split"] == "validation" and report["seed"] is None

    assert main([*arguments, "--dataset", str(saved), "--out", str(out)]) == 2
    assert "pass one with --split" in capsys.readouterr().err


def test_text_blind_answer_is_every_object():
    dataset = make_synthetic_referring_dataset(12, 3, CONFIG)
    # Every target lies inside the objects, so each IoU is |target| / |objects|; no-target samples score 0.
    ious = []
    for row in dataset:
        image, mask = np.asarray(row["image"]), np.asarray(row["mask"]) > 0
        objects = ~((image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2]) & (image[..., 0] <= 100))
        ious.append(mask.sum() / objects.sum())
    metrics = evaluate_text_blind(dataset)["metrics"]
    assert metrics["giou"] == pytest.approx(np.mean(ious), abs=1e-4)
    assert metrics["n_acc"] == 0.0


def test_mask_grid_reference_keeps_cell_aligned_masks_and_loses_one_pixel_bars():
    square, bar, thick_bar = (np.zeros((64, 64), dtype=np.uint8) for _ in range(3))
    square[8:16, 20:32] = 1  # aligned to the 2-px cells of a 32 x 32 grid
    bar[10:40, 33] = 1  # one pixel wide: every cell it crosses is half inside, never above the threshold
    thick_bar[10:40, 32:34] = 1
    rows = [{"expression": "x", "mask": mask} for mask in (square, bar, thick_bar)]

    assert evaluate_mask_grid(rows, 64)["metrics"]["giou"] == pytest.approx(1.0, abs=1e-4)
    coarse = evaluate_mask_grid(rows, 32)["metrics"]
    assert coarse["giou"] == pytest.approx(2 / 3, abs=1e-4)
    assert coarse["ciou"] == pytest.approx((96 + 60) / (96 + 30 + 60))
