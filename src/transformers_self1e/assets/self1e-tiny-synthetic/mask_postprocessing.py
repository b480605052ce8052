"""From mask logits on the tile canvas to masks at the original image size."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

BACKGROUND = -1
MAX_NAMED_PROMPTS = 5


@dataclass
class MaskPrediction:
    """Masks of one image, at its original size.

    Attributes:
        masks: `(num_masks, height, width)` booleans.
        scores: `(num_masks,)` mean probability inside each mask (0 for an empty mask).
        no_target: `(num_masks,)` True where no pixel reached the threshold (nothing matches the prompt).
        probabilities: `(num_masks, height, width)` sigmoid probabilities, when requested.
    """

    masks: torch.BoolTensor
    scores: torch.FloatTensor
    no_target: torch.BoolTensor
    probabilities: torch.FloatTensor | None = None


def resize_mask_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.FloatTensor:
    """Bilinear (align_corners=False) resize of `(num_masks, h, w)` canvas logits to `size`, in float32.

    The tile canvas covers the whole image (InternVL tiling resizes the image onto the grid without padding), so
    undoing the tiling is a resize to the original height and width.
    """
    if logits.ndim != 3:
        raise ValueError(f"mask logits must be (num_masks, height, width), got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        return logits.new_zeros((0, *size), dtype=torch.float32)
    return F.interpolate(logits[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def check_finite_mask_logits(logits: torch.Tensor, prompts: Sequence[str] | None = None) -> None:
    """
    Raises a `ValueError` naming the masks (by their `prompts` when given) whose logits hold NaN or infinity.

    Thresholded, a NaN logit is background (`NaN > 0` is false), so a broken model would read as a confident "nothing
    there"; the cause is upstream (corrupted weights, a dtype that overflows), hence an error rather than a result.
    """
    if prompts is not None and len(prompts) != logits.shape[0]:
        raise ValueError(f"prompts names {len(prompts)} masks but the logits hold {logits.shape[0]}")
    is_finite = torch.isfinite(logits).flatten(1).all(-1)
    if bool(is_finite.all()):
        return
    rows = (~is_finite).nonzero().flatten().tolist()
    names = [f"prompt {prompts[row]!r}" if prompts is not None else f"mask {row}" for row in rows[:MAX_NAMED_PROMPTS]]
    if len(rows) > MAX_NAMED_PROMPTS:
        names.append(f"... ({len(rows) - MAX_NAMED_PROMPTS} more)")
    kinds = [kind for kind, found in (("NaN", logits.isnan().any()), ("inf", logits.isinf().any())) if found]
    raise ValueError(
        f"the model produced non-finite mask logits ({' and '.join(kinds)}) for {', '.join(names)}: check the "
        "weights and the dtype (float16 can overflow)"
    )


def logits_to_prediction(
    logits: torch.Tensor,
    size: tuple[int, int],
    threshold: float = 0.5,
    return_probabilities: bool = False,
    prompts: Sequence[str] | None = None,
) -> MaskPrediction:
    """Masks at `size` where `sigmoid(logits) > threshold` (0.5 is the reference's `logits > 0`).

    Raises:
        ValueError: the logits hold NaN or infinity (see `check_finite_mask_logits`; `prompts` name the masks).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability strictly between 0 and 1, got {threshold}")
    resized = resize_mask_logits(logits, size)
    check_finite_mask_logits(logits, prompts)
    probabilities = resized.sigmoid()
    masks = probabilities > threshold
    areas = masks.flatten(1).sum(-1)
    inside = (probabilities * masks).flatten(1).sum(-1)
    scores = torch.where(areas > 0, inside / areas.clamp_min(1), torch.zeros_like(inside))
    return MaskPrediction(masks, scores, areas == 0, probabilities if return_probabilities else None)


def label_map_from_logits(
    logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.5, prompts: Sequence[str] | None = None
) -> torch.LongTensor:
    """Open-vocabulary semantic map: each pixel takes the class (index into the `num_classes` logits) with the
    highest logit, or `BACKGROUND` (-1) where even that class is below `threshold`.

    Raises:
        ValueError: the logits hold NaN or infinity (see `check_finite_mask_logits`; `prompts` name the classes).
    """
    resized = resize_mask_logits(logits, size)
    check_finite_mask_logits(logits, prompts)
    probabilities = resized.sigmoid()
    if probabilities.shape[0] == 0:
        return torch.full(size, BACKGROUND, dtype=torch.long)
    best, labels = probabilities.max(dim=0)
    return torch.where(best > threshold, labels, torch.full_like(labels, BACKGROUND))


__all__ = [
    "BACKGROUND",
    "MaskPrediction",
    "check_finite_mask_logits",
    "label_map_from_logits",
    "logits_to_prediction",
    "resize_mask_logits",
]
