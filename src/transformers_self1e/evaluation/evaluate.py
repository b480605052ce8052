"""Referring segmentation evaluation of a SELF1E model over a dataset: cIoU, gIoU, N-acc and T-acc, overall and per
value of descriptive columns. Synthetic samples need only the core dependencies; a saved dataset needs the `data`
extra (`datasets`, and `pycocotools` for run-length masks)."""

import json
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F
from transformers.utils import logging

from ..data.masks import to_binary_mask
from ..data.synthetic import SyntheticConfig, SyntheticReferringRows, object_pixels
from .metrics import ReferringSegmentationMetrics

if TYPE_CHECKING:
    import datasets

BREAKDOWN_COLUMNS = ("target_size_class", "expression_kind")
DEFAULT_SYNTHETIC_SAMPLES = 200
_DATASET_SPEC = re.compile(r"(?P<name>[^\[\]]+)(?:\[:(?P<count>[0-9]+)\])?")


def referring_targets(row: Mapping) -> list[tuple[str, Any]]:
    """The `(expression, mask)` pairs of a row: one for a synthetic row (`expression`, `mask`), one per target of a
    schema row (`expressions`, `masks`, see `transformers_self1e.data.schema`; none for VQA)."""
    if "expression" in row:
        return [(row["expression"], row["mask"])]
    if "expressions" in row:
        if len(row["expressions"]) != len(row["masks"]):
            raise ValueError(f"a row has {len(row['expressions'])} expressions but {len(row['masks'])} masks")
        return list(zip(row["expressions"], row["masks"]))
    raise ValueError(f"a row needs `expression` and `mask`, or `expressions` and `masks`; it has {sorted(row)}")


def evaluate_referring(
    model,
    processor,
    dataset: "datasets.Dataset | Sequence[Mapping]",
    *,
    threshold: float = 0.5,
    breakdown_columns: Sequence[str] = BREAKDOWN_COLUMNS,
    images_kwargs: dict | None = None,
    show_progress: bool = False,
) -> dict:
    """Segments every target of `dataset` with `model.segment` and scores the masks (`ReferringSegmentationMetrics`).

    Args:
        model ([`Self1EForSegmentation`]): the model, on its device and dtype.
        processor ([`Self1EProcessor`]): its processor.
        dataset: rows with an `image` and their targets (see [`referring_targets`]).
        threshold: probability above which a pixel is inside a mask.
        breakdown_columns: columns whose values split the metrics too, where the dataset has them.
        images_kwargs: image processor overrides, e.g. `{"max_tiles": 4}`.
        show_progress: show a progress bar over the rows.

    Returns:
        `metrics` (`ciou`, `giou`, `n_acc`, `t_acc`, NaN without samples to average, and the counts `num_samples`,
        `num_no_target`, `num_target`), `breakdown` (`{column: {value: metrics}}`), `num_images` and `wall_time_s`.
    """
    start = time.perf_counter()

    def segment(row: Mapping, targets: list[tuple[str, Any]]) -> torch.Tensor:
        expressions = [expression for expression, _ in targets]
        kwargs = images_kwargs or {}
        return model.segment(row["image"], expressions, processor=processor, threshold=threshold, **kwargs).masks

    report = score_referring(dataset, segment, breakdown_columns, show_progress)
    return {**report, "wall_time_s": time.perf_counter() - start}


def score_referring(
    dataset: "datasets.Dataset | Sequence[Mapping]",
    predict: Callable[[Mapping, list[tuple[str, Any]]], Sequence[torch.Tensor]],
    breakdown_columns: Sequence[str] = BREAKDOWN_COLUMNS,
    show_progress: bool = False,
) -> dict:
    """Scores the masks `predict(row, targets)` gives for each row's targets (see [`referring_targets`]), as
    [`evaluate_referring`] does: `metrics`, `breakdown` (`{column: {value: metrics}}`) and `num_images`."""
    scores = ReferringScores(breakdown_columns)
    for row in logging.tqdm(dataset, desc="evaluating", unit="image", disable=not show_progress):
        targets = referring_targets(row)
        if targets:
            scores.add_row(row, predict(row, targets), [to_binary_mask(mask) for _, mask in targets])
    return scores.compute()


class ReferringScores:
    """The metrics of a report being built row by row: overall, and per value of each breakdown column a row has.

    Args:
        breakdown_columns: columns whose values split the metrics too, where a row has them.
    """

    def __init__(self, breakdown_columns: Sequence[str] = BREAKDOWN_COLUMNS):
        self.breakdown_columns = breakdown_columns
        self.overall = ReferringSegmentationMetrics()
        self.groups: dict[str, dict[Any, ReferringSegmentationMetrics]] = {}
        self.num_images = 0

    def add_row(self, row: Mapping, predictions: Sequence[torch.Tensor], gts: Sequence[torch.Tensor]) -> None:
        """Scores the predicted masks of one image's targets against their ground truths (`to_binary_mask`), in
        order; `row` gives the image's breakdown values."""
        self.num_images += 1
        for prediction, gt in zip(predictions, gts):
            self.overall.update(prediction, gt)
            for column in self.breakdown_columns:
                if column in row:
                    group = self.groups.setdefault(column, defaultdict(ReferringSegmentationMetrics))
                    group[row[column]].update(prediction, gt)

    def compute(self) -> dict:
        """`metrics`, `breakdown` (`{column: {value: metrics}}`) and `num_images`, as [`score_referring`] reports."""
        return {
            "metrics": self.overall.compute(),
            "breakdown": {
                column: {value: metrics.compute() for value, metrics in sorted(values.items())}
                for column, values in self.groups.items()
            },
            "num_images": self.num_images,
        }


def evaluate_text_blind(dataset: "datasets.Dataset | Sequence[Mapping]") -> dict:
    """The report of [`score_referring`] for answering every expression of synthetic rows with every object of the
    image (`object_pixels`): the best a segmenter that ignores the text can do."""
    return score_referring(
        dataset, lambda row, targets: [torch.from_numpy(object_pixels(row["image"]))] * len(targets)
    )


def evaluate_mask_grid(dataset: "datasets.Dataset | Sequence[Mapping]", grid_size: int) -> dict:
    """The report of [`score_referring`] for answering every expression with its own ground truth read through a
    `grid_size` x `grid_size` grid of mask logits: each cell holds the share of its pixels inside the mask (minus one
    half, as a logit sign), and the grid is resized back to the image and thresholded as model logits are. A reference
    for what masks read from a grid of that size reach even with the right target (close to, not exactly, the best
    such a grid can do)."""

    def through_grid(row: Mapping, targets: list[tuple[str, Any]]) -> list[torch.Tensor]:
        # Floating predictions are logits: the metrics resize them to the ground truth and threshold them at 0.
        return [F.adaptive_avg_pool2d(to_binary_mask(mask)[None], grid_size)[0] - 0.5 for _, mask in targets]

    return score_referring(dataset, through_grid)


def write_report(report: Mapping, path: str | Path) -> Path:
    """Writes `report` as indented JSON, NaN (a metric without samples to average) as `null`; the file is written
    beside `path` and renamed over it, so an interrupted write leaves no partial report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_ready(report), indent=2, allow_nan=False) + "\n"
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def parse_dataset_spec(spec: str) -> tuple[str, int | None]:
    """The name and row count of a dataset spec, `NAME` (count None) or `NAME[:N]` with N >= 1.

    Raises:
        ValueError: `spec` is empty, has a slice other than `[:N]`, or N is 0.
    """
    match = _DATASET_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"dataset {spec!r} is not NAME or NAME[:N]: give synthetic[:N] or a folder, e.g. PATH[:100]")
    count = None if match["count"] is None else int(match["count"])
    if count == 0:
        raise ValueError(f"dataset {spec!r} asks for no rows: N in NAME[:N] must be at least 1")
    return match["name"], count


def load_evaluation_dataset(
    spec: str, split: str | None = None, seed: int = 1, synthetic_config: SyntheticConfig | None = None
) -> "datasets.Dataset | SyntheticReferringRows":
    """The dataset named by `spec`: `synthetic[:N]` (the first N synthetic samples of `seed` as plain rows, see
    `SyntheticReferringRows`; 200 without `[:N]`), or a folder written by `save_to_disk` (a `DatasetDict` needs
    `split` unless it has one split), optionally `PATH[:N]` for its first N rows."""
    name, count = parse_dataset_spec(spec)
    if name == "synthetic":
        if split is not None:
            raise ValueError("--split is for a saved dataset, not for synthetic data")
        return SyntheticReferringRows(DEFAULT_SYNTHETIC_SAMPLES if count is None else count, seed, synthetic_config)

    if not Path(name).is_dir():
        raise FileNotFoundError(f"no dataset at {name}: give synthetic[:N] or a folder written by save_to_disk")
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(name)
    if isinstance(dataset, DatasetDict):
        if split is None and len(dataset) != 1:
            raise ValueError(f"{name} holds the splits {sorted(dataset)}: pass one with --split")
        if split is not None and split not in dataset:
            raise ValueError(f"{name} has no split {split!r}, only {sorted(dataset)}")
        dataset = dataset[split or next(iter(dataset))]
    elif split is not None:
        raise ValueError(f"{name} is a single dataset without splits; drop --split")
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))


__all__ = [
    "BREAKDOWN_COLUMNS",
    "ReferringScores",
    "evaluate_referring",
    "load_evaluation_dataset",
    "parse_dataset_spec",
    "referring_targets",
    "write_report",
]
