"""From mask logits on the tile canvas to masks at the original image size."""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

BACKGROUND = -1


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


def logits_to_prediction(
    logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.5, return_probabilities: bool = False
) -> MaskPrediction:
    """Masks at `size` where `sigmoid(logits) > threshold` (0.5 is the reference's `logits > 0`)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability strictly between 0 and 1, got {threshold}")
    probabilities = resize_mask_logits(logits, size).sigmoid()
    masks = probabilities > threshold
    areas = masks.flatten(1).sum(-1)
    inside = (probabilities * masks).flatten(1).sum(-1)
    scores = torch.where(areas > 0, inside / areas.clamp_min(1), torch.zeros_like(inside))
    return MaskPrediction(masks, scores, areas == 0, probabilities if return_probabilities else None)


def label_map_from_logits(logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> torch.LongTensor:
    """Open-vocabulary semantic map: each pixel takes the class (index into the `num_classes` logits) with the
    highest logit, or `BACKGROUND` (-1) where even that class is below `threshold`."""
    probabilities = resize_mask_logits(logits, size).sigmoid()
    if probabilities.shape[0] == 0:
        return torch.full(size, BACKGROUND, dtype=torch.long)
    best, labels = probabilities.max(dim=0)
    return torch.where(best > threshold, labels, torch.full_like(labels, BACKGROUND))


__all__ = ["BACKGROUND", "MaskPrediction", "label_map_from_logits", "logits_to_prediction", "resize_mask_logits"]
