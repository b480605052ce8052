"""Mask losses of SELF1E training (paper Sec. 3.6), computed as the reference training computes them."""

import torch
from torch.nn import functional as F

DICE_SCALE = 1000.0
DICE_EPS = 1e-6


def shrink_ground_truth(gt_masks: torch.Tensor, max_short_side: int) -> torch.Tensor:
    """Bilinearly shrink `(n, H, W)` masks whose short side exceeds `max_short_side` (keeps soft edges)."""
    height, width = gt_masks.shape[-2:]
    short_side = min(height, width)
    if short_side <= max_short_side:
        return gt_masks
    size = (height * max_short_side // short_side, width * max_short_side // short_side)
    return F.interpolate(gt_masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of `(n, h, w)` logits to `size`."""
    return F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def sigmoid_bce_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pixel-averaged binary cross-entropy of each mask: `(n, h, w)` -> `(n,)`."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(1)


def dice_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss of each mask with LISA's smoothing (sums scaled by 1/1000, eps 1e-6): `(n, h, w)` -> `(n,)`."""
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    overlap = 2 * (probs * targets).sum(-1) / DICE_SCALE
    total = (probs.sum(-1) + targets.sum(-1)) / DICE_SCALE
    return 1 - (overlap + DICE_EPS) / (total + DICE_EPS)


def mask_losses(
    logits: torch.Tensor, gt_masks: torch.Tensor, max_short_side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed BCE and Dice losses of `(n, h, w)` mask logits against `(n, H, W)` ground truth.

    The logits are resized to the (possibly shrunk) ground-truth size, not the other way round.
    """
    targets = shrink_ground_truth(gt_masks.to(logits.dtype), max_short_side)
    logits = resize_logits(logits, tuple(targets.shape[-2:]))
    return sigmoid_bce_per_mask(logits, targets).sum(), dice_per_mask(logits, targets).sum()


__all__ = ["mask_losses", "dice_per_mask", "sigmoid_bce_per_mask", "shrink_ground_truth", "resize_logits"]
