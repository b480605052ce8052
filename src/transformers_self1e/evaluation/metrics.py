"""Segmentation metrics: cIoU / gIoU / N-acc / T-acc for (generalized) referring segmentation, mIoU for semantic.

Sources the conventions were checked against (read, not copied):

* SELF1E authors, `ANDYZAQ/SELF1E` `train_hf_ivl_seq.py` (`LISATrainer.evaluate`) and `utils_internvl/utils.py`
  (`intersectionAndUnionGPU`, `AverageMeter`). It is LISA's `validate` (`dvlab-research/LISA` `train_ds.py`,
  `utils/utils.py`) with the logits resized to the ground-truth size first, and it is what produced the paper's
  RefCOCO(+/g), ReasonSeg and gRefCOCO numbers (Sec. 4.2.2: gRefCOCO "follows the evaluation template of RES").
* GRES no-target accuracies: `LeapLabTHU/GSVA` `solver.py` (`eval_gres`); cf. `henghuiding/ReLA`
  `gres_model/evaluation/refer_evaluation.py`.
* mIoU: `facebookresearch/detectron2` `detectron2/evaluation/sem_seg_evaluation.py` (`SemSegEvaluator`, used by
  the open-vocabulary benchmarks A150/PC59/PC459/PAS20, e.g. `cvlab-kaist/CAT-Seg` `train_net.py`) and
  `open-mmlab/mmsegmentation` `mmseg/evaluation/metrics/iou_metric.py` (`IoUMetric`).
"""

import math
from typing import Literal, Sequence

import numpy as np
import torch

from ..modeling.mask_postprocessing import resize_mask_logits

ArrayLike = torch.Tensor | np.ndarray

GIOU_UNION_EPS = 1e-5
"""Per-sample IoU is `I / (U + 1e-5)` in the reference (`acc_iou += intersection_i / (union_i + 1e-5)`)."""
GIOU_COUNT_EPS = 1e-5
"""gIoU is `sum / (count + 1e-5)`: the reference reads `AverageMeter.avg` after `all_reduce`, which adds it."""
CIOU_UNION_EPS = 1e-10
"""cIoU is `sum(I) / (sum(U) + 1e-10)` in the reference."""


def _to_tensor(array: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach()
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(array))
    raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(array).__name__}")


def _as_batch(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """`(H, W)` becomes `(1, H, W)`; `(N, H, W)` is kept; any other rank is a `ValueError`."""
    if tensor.dim() == 2:
        return tensor.unsqueeze(0)
    if tensor.dim() == 3:
        return tensor
    raise ValueError(f"{name} must have shape (H, W) or (N, H, W), got shape {tuple(tensor.shape)}")


def _check_values(tensor: torch.Tensor, name: str, allowed: set[int], description: str) -> None:
    bad = [value for value in torch.unique(tensor).tolist() if value not in allowed]
    if bad:
        raise ValueError(f"{name} must be {description}; found value(s) {bad[:5]}")


def logits_to_mask(logits: ArrayLike, size: Sequence[int]) -> torch.Tensor:
    """Binary masks from mask logits: bilinear resize to `size` (`resize_mask_logits`, the model's own), then
    `logits > 0`.

    As in the reference (`F.interpolate(..., mode="bilinear", align_corners=False)` to the ground-truth size, then
    `pred > 0`), a logit of exactly 0 is background. The resize keeps the logits' floating dtype.

    Args:
        logits: floating `(H, W)` or `(N, H, W)` logits, any spatial size.
        size: the `(height, width)` to resize to, normally the ground-truth mask size.

    Returns:
        A bool tensor `(height, width)` or `(N, height, width)`, matching the rank of `logits`.
    """
    tensor = _to_tensor(logits, "logits")
    if not tensor.is_floating_point():
        raise ValueError(f"logits must have a floating dtype, got {tensor.dtype}")
    size = tuple(int(side) for side in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) with positive sides, got {size}")
    batch = _as_batch(tensor, "logits")
    if tuple(batch.shape[-2:]) != size:
        batch = resize_mask_logits(batch, size)
    masks = batch > 0
    return masks if tensor.dim() == 3 else masks[0]


def _prediction_masks(preds: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Floating predictions are logits (resized, then `> 0`); bool/integer ones are 0/1 masks of the gt size."""
    if preds.is_floating_point():
        return logits_to_mask(preds, size)
    _check_values(preds, "binary prediction masks", {0, 1}, "0/1 (pass floating logits to threshold them)")
    if tuple(preds.shape[-2:]) != size:
        raise ValueError(
            f"binary prediction masks have spatial size {tuple(preds.shape[-2:])} but gt_masks have {size}; "
            "pass floating logits to have them resized"
        )
    return preds.bool()


def _check_no_target(no_target: bool | Sequence[bool] | ArrayLike | None, gt_empty: torch.Tensor) -> None:
    """The given no-target flags must agree with the ground truth: no-target iff the gt mask has no positive pixel."""
    if no_target is None:
        return
    flags = torch.as_tensor(no_target, dtype=torch.bool).reshape(-1).to(gt_empty.device)
    if flags.numel() != gt_empty.numel():
        raise ValueError(f"no_target holds {flags.numel()} flag(s) for {gt_empty.numel()} sample(s)")
    disagree = (flags != gt_empty).nonzero().flatten().tolist()
    if disagree:
        index = disagree[0]
        state = "no positive pixel" if gt_empty[index] else "positive pixels"
        raise ValueError(f"no_target[{index}]={bool(flags[index])} but gt mask {index} has {state}")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def format_metric(value: float | None, digits: int = 4) -> str:
    """`value` with `digits` decimals, for people to read; "n/a" for a metric without samples to average (NaN in
    `compute()`, null in a JSON report)."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


class ReferringSegmentationMetrics:
    """Streaming cIoU, gIoU, N-acc and T-acc over referring (RefCOCO/+/g, ReasonSeg) or gRefCOCO samples.

    One sample is one expression with one binary ground-truth mask. Predictions are thresholded as
    `logits_to_mask` does; pixels where the ground truth equals `ignore_index` count in neither mask (ReasonSeg
    marks such regions 255). For sample `i`, with `P_i` its prediction and `G_i` its ground truth over non-ignored
    pixels, `I_i = |P_i & G_i|` and `U_i = |P_i | G_i|`:

        cIoU = sum_i I_i / (sum_i U_i + 1e-10)
        gIoU = sum_i IoU_i / (N + 1e-5),   IoU_i = I_i / (U_i + 1e-5) + [U_i == 0]

    exactly as the SELF1E/LISA reference: the `[U_i == 0]` term (`acc_iou[union_i == 0] += 1.0`) scores a sample
    whose prediction and ground truth are both empty as 1, otherwise the `1e-5` keeps `IoU_i` just below `I_i / U_i`;
    the `1e-5` on `N` comes from the reference averaging through `AverageMeter.all_reduce`.

    No-target samples (gRefCOCO; ground truth with no positive pixel) need no special case: these formulas already
    give the GRES rule of GSVA's `eval_gres` (and ReLA), with "predicted no-target" meaning "predicted empty mask":
    predicted empty, `IoU_i = 1` and nothing is added to cIoU; predicted non-empty, `IoU_i = 0` and its pixels are
    added to the cumulative union. A prediction is non-empty when it has at least `min_pixels` positive non-ignored
    pixels (reference: `min_pixels=1`, any pixel); a smaller one is scored as the empty mask everywhere. With the
    GRES definitions (GSVA `eval_gres`; ReLA's code instead adds 1 to each denominator and computes T-acc from
    no-target predictions):

        N-acc = #(no-target samples predicted empty) / #(no-target samples)
        T-acc = #(target samples predicted non-empty) / #(target samples)

    each NaN when its denominator is 0. All values are fractions (the papers report them x100).
    """

    def __init__(self, ignore_index: int | None = 255, min_pixels: int = 1) -> None:
        """
        Args:
            ignore_index: ground-truth value excluded from evaluation (the reference uses 255); `None` for none.
            min_pixels: fewest positive pixels a prediction needs to count as non-empty; at least 1.
        """
        if ignore_index in (0, 1):
            raise ValueError(f"ignore_index must differ from the mask values 0 and 1, got {ignore_index}")
        if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1:
            raise ValueError(f"min_pixels must be an integer >= 1, got {min_pixels!r}")
        self.ignore_index = ignore_index
        self.min_pixels = min_pixels
        self.reset()

    def reset(self) -> None:
        """Forget every sample seen so far."""
        self._intersection = 0
        self._union = 0
        self._iou_sum = 0.0
        self._num_samples = 0
        self._num_no_target = 0
        self._no_target_predicted_empty = 0
        self._target_predicted_non_empty = 0

    def update(
        self,
        preds: ArrayLike,
        gt_masks: ArrayLike,
        no_target: bool | Sequence[bool] | ArrayLike | None = None,
    ) -> None:
        """Add samples.

        Args:
            preds: `(H', W')` or `(N, H', W')` floating mask logits (resized to the gt size, then `> 0`), or bool /
                integer 0/1 masks already at the gt size `(H, W)` / `(N, H, W)`.
            gt_masks: `(H, W)` or `(N, H, W)` ground truth with values 0, 1 and optionally `ignore_index`.
            no_target: optional per-sample flags (a bool for a single sample) marking no-target expressions, such as
                gRefCOCO's `empty`; they are checked against the ground truth, which must then have no positive
                pixel (and a target sample at least one). By default no-target is read from the ground truth.
        """
        gt = _as_batch(_to_tensor(gt_masks, "gt_masks"), "gt_masks")
        allowed = {0, 1} if self.ignore_index is None else {0, 1, self.ignore_index}
        _check_values(gt, "gt_masks", allowed, f"binary with values in {sorted(allowed)}")
        pred = _as_batch(_to_tensor(preds, "preds"), "preds")
        if pred.shape[0] != gt.shape[0]:
            raise ValueError(f"preds hold {pred.shape[0]} mask(s) but gt_masks hold {gt.shape[0]}")
        pred = _prediction_masks(pred, tuple(gt.shape[-2:])).to(gt.device)

        gt = gt.to(torch.int64)
        gt_positive = gt == 1
        if self.ignore_index is not None:
            pred = pred & (gt != self.ignore_index)
        predicted_non_empty = pred.flatten(1).sum(1) >= self.min_pixels
        pred = pred & predicted_non_empty[:, None, None]
        gt_empty = ~gt_positive.flatten(1).any(1)
        _check_no_target(no_target, gt_empty)

        intersection = (pred & gt_positive).flatten(1).sum(1).double()
        union = (pred | gt_positive).flatten(1).sum(1).double()
        sample_iou = intersection / (union + GIOU_UNION_EPS) + (union == 0).double()

        self._intersection += int(intersection.sum().item())
        self._union += int(union.sum().item())
        self._iou_sum += sample_iou.sum().item()
        self._num_samples += gt.shape[0]
        self._num_no_target += int(gt_empty.sum().item())
        self._no_target_predicted_empty += int((gt_empty & ~predicted_non_empty).sum().item())
        self._target_predicted_non_empty += int((~gt_empty & predicted_non_empty).sum().item())

    def compute(self) -> dict[str, float | int]:
        """The metrics over all samples so far (NaN where there are no samples to average).

        Returns:
            `ciou`, `giou`, `n_acc`, `t_acc` (floats) and the counts `num_samples`, `num_no_target`, `num_target`.
        """
        num_target = self._num_samples - self._num_no_target
        no_samples = self._num_samples == 0
        return {
            "ciou": float("nan") if no_samples else self._intersection / (self._union + CIOU_UNION_EPS),
            "giou": float("nan") if no_samples else self._iou_sum / (self._num_samples + GIOU_COUNT_EPS),
            "n_acc": _ratio(self._no_target_predicted_empty, self._num_no_target),
            "t_acc": _ratio(self._target_predicted_non_empty, num_target),
            "num_samples": self._num_samples,
            "num_no_target": self._num_no_target,
            "num_target": num_target,
        }


class SemanticSegmentationMetrics:
    """Streaming mIoU from a confusion matrix over label maps (open-vocabulary semantic segmentation).

    Pixels whose ground truth is `ignore_index` are dropped, with their predictions. Over all pixels seen, with
    `TP_c` the pixels of class `c` in both maps, `GT_c` / `PRED_c` those of class `c` in the ground truth /
    prediction:

        IoU_c = TP_c / (GT_c + PRED_c - TP_c)      for each counted class c
        mIoU  = mean of IoU_c over the counted classes

    Which classes count (`class_rule`):

    * `"detectron2"` (default; `SemSegEvaluator`, the convention of the A150/PC59/PC459/PAS20 open-vocabulary
      benchmarks): classes present in the ground truth, `GT_c > 0`. A class only ever predicted is left out.
    * `"mmseg"` (`IoUMetric`, `nanmean` of `I / U`): classes with a non-zero union. A class only ever predicted
      counts, with IoU 0.

    Under both rules a class never in the ground truth and never predicted is excluded. Uncounted classes have IoU
    NaN; `miou` is NaN when no class counts. Values are fractions (the papers report them x100).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        class_rule: Literal["detectron2", "mmseg"] = "detectron2",
    ) -> None:
        """
        Args:
            num_classes: number of classes; labels are `0 .. num_classes - 1`.
            ignore_index: ground-truth label excluded from evaluation; `None` for none.
            class_rule: which classes enter the mean, see the class docstring.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class label (num_classes={num_classes})")
        if class_rule not in ("detectron2", "mmseg"):
            raise ValueError(f"class_rule must be 'detectron2' or 'mmseg', got {class_rule!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_rule = class_rule
        self.reset()

    def reset(self) -> None:
        """Forget every pixel seen so far."""
        self._confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """`(num_classes, num_classes)` pixel counts; rows are ground-truth classes, columns predicted classes."""
        return self._confusion.copy()

    def _label_batch(self, labels: ArrayLike, name: str) -> torch.Tensor:
        batch = _as_batch(_to_tensor(labels, name), name)
        if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer label map (argmax the class scores first), got {batch.dtype}")
        return batch.to(torch.int64)

    def _check_range(self, labels: torch.Tensor, name: str, also_allowed: str = "") -> None:
        out_of_range = labels[(labels < 0) | (labels >= self.num_classes)]
        if out_of_range.numel():
            values = torch.unique(out_of_range)[:5].tolist()
            allowed = f"[0, {self.num_classes}){also_allowed}"
            raise ValueError(f"{name} must hold labels in {allowed}; found value(s) {values}")

    def update(self, pred_labels: ArrayLike, gt_labels: ArrayLike) -> None:
        """Add label maps.

        Args:
            pred_labels: `(H, W)` or `(N, H, W)` integer predicted labels in `[0, num_classes)`.
            gt_labels: integer ground-truth labels of the same shape, in `[0, num_classes)` or `ignore_index`.
        """
        pred = self._label_batch(pred_labels, "pred_labels")
        gt = self._label_batch(gt_labels, "gt_labels")
        if pred.shape != gt.shape:
            raise ValueError(f"pred_labels shape {tuple(pred.shape)} differs from gt_labels shape {tuple(gt.shape)}")
        pred = pred.to(gt.device)
        self._check_range(pred, "pred_labels")
        if self.ignore_index is not None:
            kept = gt != self.ignore_index
            pred, gt = pred[kept], gt[kept]
        self._check_range(gt, "gt_labels", "" if self.ignore_index is None else f" or {self.ignore_index} (ignored)")
        counts = torch.bincount(gt.flatten() * self.num_classes + pred.flatten(), minlength=self.num_classes**2)
        self._confusion += counts.reshape(self.num_classes, self.num_classes).cpu().numpy()

    def compute(self) -> dict[str, float | int | np.ndarray]:
        """The metrics over all pixels so far.

        Returns:
            `miou` (float), `per_class_iou` (`(num_classes,)` float array, NaN for uncounted classes) and
            `num_counted_classes`.
        """
        confusion = self._confusion.astype(np.float64)
        true_positive = np.diag(confusion)
        gt_pixels = confusion.sum(axis=1)
        union = gt_pixels + confusion.sum(axis=0) - true_positive
        counted = gt_pixels > 0 if self.class_rule == "detectron2" else union > 0
        per_class_iou = np.full(self.num_classes, np.nan)
        per_class_iou[counted] = true_positive[counted] / union[counted]
        return {
            "miou": float(per_class_iou[counted].mean()) if counted.any() else float("nan"),
            "per_class_iou": per_class_iou,
            "num_counted_classes": int(counted.sum()),
        }
