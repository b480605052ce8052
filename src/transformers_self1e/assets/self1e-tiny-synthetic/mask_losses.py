"""Mask losses of SELF1E training (paper Sec. 3.6), computed as the reference training computes them."""

import torch
from torch.nn import functional as F

from .mask_postprocessing import resize_mask_logits

# LISA's Dice smoothing: the sums are scaled by 1/1000 before the epsilon is added.
DICE_SCALE = 1000.0
DICE_EPS = 1e-6


def shrink_ground_truth(gt_masks: torch.Tensor, max_short_side: int) -> torch.Tensor:
    """
    Bilinearly shrinks ground-truth masks whose short side exceeds `max_short_side`, keeping the aspect ratio (the
    shrunk masks have soft edges, which the losses take as they are).

    Args:
        gt_masks (`torch.Tensor` of shape `(num_masks, height, width)`):
            Floating ground-truth masks with values in [0, 1].
        max_short_side (`int`):
            Largest short side kept as it is.

    Returns:
        `torch.Tensor`: `gt_masks` itself when its short side is at most `max_short_side`, otherwise the masks resized
        to that short side.
    """
    height, width = gt_masks.shape[-2:]
    short_side = min(height, width)
    if short_side <= max_short_side:
        return gt_masks
    size = (height * max_short_side // short_side, width * max_short_side // short_side)
    return F.interpolate(gt_masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def sigmoid_bce_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Pixel-averaged binary cross-entropy of each mask.

    Args:
        logits (`torch.Tensor` of shape `(num_masks, height, width)`):
            Mask logits.
        targets (`torch.Tensor` of the same shape):
            Ground truth with values in [0, 1].

    Returns:
        `torch.Tensor` of shape `(num_masks,)`.
    """
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(1)


def dice_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Soft Dice loss of each mask, `1 - (2 |P G| / s + eps) / ((|P| + |G|) / s + eps)` with `P = sigmoid(logits)`,
    `G = targets`, `s = DICE_SCALE` and `eps = DICE_EPS` (LISA's smoothing). Shapes as in [`sigmoid_bce_per_mask`].
    """
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    overlap = 2 * (probs * targets).sum(-1) / DICE_SCALE
    total = (probs.sum(-1) + targets.sum(-1)) / DICE_SCALE
    return 1 - (overlap + DICE_EPS) / (total + DICE_EPS)


def mask_losses(
    logits: torch.Tensor, gt_masks: torch.Tensor, max_short_side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Summed BCE and Dice losses of mask logits against their ground truth. The ground truth is first shrunk (see
    [`shrink_ground_truth`]), then the logits are resized to it in their own dtype, not the other way round.

    Args:
        logits (`torch.Tensor` of shape `(num_masks, height, width)`):
            Mask logits at the model's resolution.
        gt_masks (`torch.Tensor` of shape `(num_masks, gt_height, gt_width)`):
            Ground-truth masks with values in [0, 1], at any size.
        max_short_side (`int`):
            Short side the ground truth is shrunk to when it is larger (`config.gt_mask_short_side`).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the BCE and the Dice loss, each summed over the masks.
    """
    targets = shrink_ground_truth(gt_masks.to(logits.dtype), max_short_side)
    logits = resize_mask_logits(logits, tuple(targets.shape[-2:]))
    return sigmoid_bce_per_mask(logits, targets).sum(), dice_per_mask(logits, targets).sum()


__all__ = ["dice_per_mask", "mask_losses", "shrink_ground_truth", "sigmoid_bce_per_mask"]
