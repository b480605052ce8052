"""From mask logits on the tile canvas to masks at the original image size.

Every `threshold` here is a probability: a pixel is inside a mask where `sigmoid(logit) > threshold`, so the default
0.5 is the reference's `logit > 0`.

Post-processing streams: the canvas logits are resized to full size a chunk of masks at a time, and each chunk is
thresholded, scored and packed to one bit per pixel before the next one is resized. Its working memory is bounded by
`max_chunk_bytes` (or one mask, if that is larger) whatever the number of masks; what is kept is one bit per pixel of
every mask ([`PackedMasks`]), plus the full-size float32 probabilities only when they are asked for.
"""

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch.nn import functional as F

BACKGROUND = -1
MAX_NAMED_PROMPTS = 5
DEFAULT_MAX_CHUNK_BYTES = 64 * 2**20
# Working bytes per full-size pixel of each mask in a chunk: its float32 probability, its boolean mask and the float32
# product of the two that the score sums.
CHUNK_BYTES_PER_PIXEL = 9


class PackedMasks:
    r"""
    Boolean `(num_masks, height, width)` masks kept at one bit per pixel (`numpy.packbits` of each row-major mask).

    Args:
        bits (`np.ndarray` of shape `(num_masks, ceil(height * width / 8))`):
            The packed pixels, `uint8`.
        size (`tuple[int, int]`):
            `(height, width)` of every mask.
    """

    def __init__(self, bits: np.ndarray, size: tuple[int, int]):
        height, width = (int(side) for side in size)
        expected = math.ceil(height * width / 8)
        if bits.dtype != np.uint8 or bits.ndim != 2 or bits.shape[1] != expected:
            raise ValueError(
                f"bits must be a (num_masks, {expected}) uint8 array for {height}x{width} masks, got "
                f"{bits.dtype} {bits.shape}"
            )
        self.bits = bits
        self.size = (height, width)

    @classmethod
    def zeros(cls, num_masks: int, size: tuple[int, int]) -> "PackedMasks":
        """Returns `num_masks` empty masks of `size`, to be filled with [`~PackedMasks.put`]."""
        return cls(np.zeros((num_masks, math.ceil(size[0] * size[1] / 8)), dtype=np.uint8), size)

    @classmethod
    def pack(cls, masks: torch.Tensor) -> "PackedMasks":
        """Packs a `(num_masks, height, width)` boolean tensor."""
        packed = cls.zeros(masks.shape[0], tuple(masks.shape[1:]))
        packed.put(0, masks)
        return packed

    def put(self, start: int, masks: torch.Tensor) -> None:
        """
        Packs `masks` into masks `start` to `start + n`.

        Args:
            start (`int`):
                Index of the first mask to overwrite.
            masks (`torch.BoolTensor` of shape `(n, height, width)`):
                The masks, at this object's size.
        """
        if masks.dtype != torch.bool or tuple(masks.shape[1:]) != self.size:
            raise ValueError(f"expected (n, {self.size[0]}, {self.size[1]}) booleans, got {masks.dtype} {masks.shape}")
        pixels = masks.detach().cpu().reshape(masks.shape[0], -1).numpy()
        self.bits[start : start + masks.shape[0]] = np.packbits(pixels, axis=1)

    @property
    def shape(self) -> torch.Size:
        """`(num_masks, height, width)`, the shape of the unpacked masks."""
        return torch.Size((len(self), *self.size))

    def __len__(self) -> int:
        return self.bits.shape[0]

    def __repr__(self) -> str:
        return f"PackedMasks(num_masks={len(self)}, size={self.size})"

    def mask(self, index: int) -> torch.BoolTensor:
        """Returns mask `index` alone as a `(height, width)` boolean tensor, without unpacking the others."""
        return self._unpack(self.bits[index][None])[0]

    def unpack(self) -> torch.BoolTensor:
        """Returns every mask as a `(num_masks, height, width)` boolean tensor (8 times the packed size)."""
        return self._unpack(self.bits)

    def _unpack(self, bits: np.ndarray) -> torch.BoolTensor:
        pixels = np.unpackbits(bits, axis=1, count=self.size[0] * self.size[1])
        return torch.from_numpy(pixels.view(np.bool_).reshape(-1, *self.size))


@dataclass
class MaskPrediction:
    r"""
    Masks of one image, at its original size.

    Args:
        packed_masks ([`PackedMasks`]):
            The masks at one bit per pixel; `masks` unpacks them all, `packed_masks.mask(index)` one.
        scores (`torch.FloatTensor` of shape `(num_masks,)`):
            Mean probability inside each mask (0 for an empty mask).
        no_target (`torch.BoolTensor` of shape `(num_masks,)`):
            True where the mask is empty (nothing matches the prompt).
        probabilities (`torch.FloatTensor` of shape `(num_masks, height, width)`, *optional*):
            Sigmoid probabilities, when requested.
        label_map (`torch.LongTensor` of shape `(height, width)`, *optional*):
            From [`logits_to_semantic_prediction`]: the index of each pixel's class, `BACKGROUND` (-1) where no class
            passes the threshold.
    """

    packed_masks: PackedMasks
    scores: torch.FloatTensor
    no_target: torch.BoolTensor
    probabilities: torch.FloatTensor | None = None
    label_map: torch.LongTensor | None = None

    @cached_property
    def masks(self) -> torch.BoolTensor:
        """`(num_masks, height, width)` booleans, unpacked on first access (one byte per pixel of every mask)."""
        return self.packed_masks.unpack()


def resize_mask_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """
    Resizes mask logits bilinearly (`align_corners=False`), in their own dtype: the one resize of mask logits that
    inference, training losses and evaluation all use, as the reference does before thresholding at 0 or computing
    a loss.

    The tile canvas covers the whole image (InternVL tiling resizes the image onto the grid without padding), so
    undoing the tiling is a resize to the original height and width.

    Args:
        logits (`torch.Tensor` of shape `(num_masks, height, width)`):
            Floating mask logits.
        size (`tuple[int, int]`):
            `(height, width)` to resize to.

    Returns:
        `torch.Tensor` of shape `(num_masks, *size)` and the dtype of `logits`.
    """
    _check_logits_shape(logits)
    if logits.shape[0] == 0:
        return logits.new_zeros((0, *size))
    return F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def threshold_logit(threshold: float) -> float:
    """
    The logit of a probability `threshold`: `logits > threshold_logit(p)` is `sigmoid(logits) > p` without computing
    a sigmoid, exactly `logits > 0` for 0.5.

    Raises:
        TypeError, ValueError: `threshold` is not a probability (see [`check_threshold`]).
    """
    check_threshold(threshold)
    return math.log(threshold / (1.0 - threshold))


def check_threshold(threshold: float) -> None:
    """
    Checks that a mask threshold is a probability strictly between 0 and 1 (see the module docstring).

    Raises:
        TypeError: `threshold` is not a real number (a bool is not one here).
        ValueError: `threshold` is not strictly between 0 and 1.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            f"threshold must be a number strictly between 0 and 1, got {type(threshold).__name__} {threshold!r}"
        )
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability strictly between 0 and 1, got {threshold}")


def check_finite_mask_logits(logits: torch.Tensor, prompts: Sequence[str] | None = None) -> None:
    """
    Checks that mask logits hold no NaN or infinity.

    Thresholded, a NaN logit is background (`NaN > 0` is false), so a broken model would read as a confident "nothing
    there"; the cause is upstream (corrupted weights, a dtype that overflows), hence an error rather than a result.

    Args:
        logits (`torch.Tensor` of shape `(num_masks, height, width)`):
            Mask logits.
        prompts (`Sequence[str]`, *optional*):
            The prompt of each mask, to name the broken ones by (by default they are named by index).

    Raises:
        ValueError: some logits are not finite (the message names up to five masks and the kinds, NaN or inf), or
            `prompts` does not name every mask.
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
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> MaskPrediction:
    """
    Masks at `size` where `sigmoid(logits) > threshold`, each scored by its mean probability.

    The masks are resized, thresholded and scored a chunk at a time, so working memory stays within
    `max_chunk_bytes` (or one mask's 9 bytes per pixel, if that is more) whatever their number. Only
    `return_probabilities=True` is not bounded: it keeps 4 bytes per pixel of every mask.

    Args:
        logits (`torch.Tensor` of shape `(num_masks, height, width)`):
            Mask logits on the tile canvas.
        size (`tuple[int, int]`):
            `(height, width)` of the original image.
        threshold (`float`, *optional*, defaults to 0.5):
            Probability above which a pixel is inside a mask, strictly between 0 and 1.
        return_probabilities (`bool`, *optional*, defaults to `False`):
            Also return the full-size float32 probabilities.
        prompts (`Sequence[str]`, *optional*):
            The prompt of each mask, to name masks with non-finite logits by.
        max_chunk_bytes (`int`, *optional*, defaults to 64 MiB):
            Working memory of one chunk of masks.

    Returns:
        [`MaskPrediction`]: the masks, their scores and no-target flags (and probabilities, when asked for).

    Raises:
        ValueError: the logits hold NaN or infinity (see [`check_finite_mask_logits`]), or `threshold` or
            `max_chunk_bytes` is out of range.
    """
    _check_inputs(logits, threshold, prompts)
    num_masks = logits.shape[0]
    packed_masks = PackedMasks.zeros(num_masks, size)
    areas = torch.zeros(num_masks, dtype=torch.long, device=logits.device)
    inside = torch.zeros(num_masks, device=logits.device)
    probabilities = logits.new_empty((num_masks, *size), dtype=torch.float32) if return_probabilities else None
    for rows, chunk in _probability_chunks(logits, size, max_chunk_bytes):
        if probabilities is not None:
            probabilities[rows] = chunk
        masks = chunk > threshold
        packed_masks.put(rows.start, masks)
        areas[rows], inside[rows] = _areas_and_sums(masks, chunk)
    return MaskPrediction(packed_masks, inside / areas.clamp_min(1), areas == 0, probabilities)


def label_map_from_logits(
    logits: torch.Tensor,
    size: tuple[int, int],
    threshold: float = 0.5,
    prompts: Sequence[str] | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> torch.LongTensor:
    """
    Open-vocabulary semantic map: each pixel takes the class with the highest logit, or `BACKGROUND` (-1) where even
    that class's probability is not above `threshold`.

    The classes are resized a chunk at a time (see [`logits_to_prediction`]); besides a chunk, the running and the
    chunk's best probability and class take about 25 bytes per pixel.

    Args:
        logits (`torch.Tensor` of shape `(num_classes, height, width)`):
            One mask logit map per class, on the tile canvas.
        size (`tuple[int, int]`):
            `(height, width)` of the original image.
        threshold (`float`, *optional*, defaults to 0.5):
            Probability the best class must exceed, strictly between 0 and 1.
        prompts (`Sequence[str]`, *optional*):
            The prompt of each class, to name classes with non-finite logits by.
        max_chunk_bytes (`int`, *optional*, defaults to 64 MiB):
            Working memory of one chunk of classes.

    Returns:
        `torch.LongTensor` of shape `size`: each pixel's class index, or `BACKGROUND`.

    Raises:
        ValueError: the logits hold NaN or infinity (see [`check_finite_mask_logits`]), or `threshold` or
            `max_chunk_bytes` is out of range.
    """
    _check_inputs(logits, threshold, prompts)
    return _best_class(logits, size, threshold, max_chunk_bytes)[0]


def logits_to_semantic_prediction(
    logits: torch.Tensor,
    size: tuple[int, int],
    threshold: float = 0.5,
    return_probabilities: bool = False,
    prompts: Sequence[str] | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> MaskPrediction:
    """
    The label map of [`label_map_from_logits`] with every class's mask (`label_map == k`) and score (the class's
    mean probability over its mask). Memory is bounded as there; `return_probabilities=True` is not.

    Args:
        logits, size, threshold, prompts, max_chunk_bytes:
            As in [`label_map_from_logits`].
        return_probabilities (`bool`, *optional*, defaults to `False`):
            Also return every class's full-size float32 probabilities.

    Returns:
        [`MaskPrediction`] with `label_map` set.

    Raises:
        ValueError: the logits hold NaN or infinity (see [`check_finite_mask_logits`]), or `threshold` or
            `max_chunk_bytes` is out of range.
    """
    _check_inputs(logits, threshold, prompts)
    num_classes = logits.shape[0]
    probabilities = logits.new_empty((num_classes, *size), dtype=torch.float32) if return_probabilities else None
    label_map, best = _best_class(logits, size, threshold, max_chunk_bytes, probabilities)
    packed_masks = PackedMasks.zeros(num_classes, size)
    areas = torch.zeros(num_classes, dtype=torch.long, device=logits.device)
    inside = torch.zeros(num_classes, device=logits.device)
    step = _masks_per_chunk(size, max_chunk_bytes)
    for start in range(0, num_classes, step):
        rows = slice(start, min(start + step, num_classes))
        masks = label_map == torch.arange(rows.start, rows.stop, device=label_map.device)[:, None, None]
        packed_masks.put(start, masks)
        # Where `label_map == k`, `best` is class k's probability.
        areas[rows], inside[rows] = _areas_and_sums(masks, best)
    return MaskPrediction(packed_masks, inside / areas.clamp_min(1), areas == 0, probabilities, label_map)


def _check_logits_shape(logits: torch.Tensor) -> None:
    if logits.ndim != 3:
        raise ValueError(f"mask logits must be (num_masks, height, width), got shape {tuple(logits.shape)}")


def _check_inputs(logits: torch.Tensor, threshold: float, prompts: Sequence[str] | None) -> None:
    check_threshold(threshold)
    _check_logits_shape(logits)
    # On the canvas, before any resizing: cheap, and every broken prompt is named at once.
    check_finite_mask_logits(logits, prompts)


def _masks_per_chunk(size: tuple[int, int], max_chunk_bytes: int) -> int:
    if max_chunk_bytes < 1:
        raise ValueError(f"max_chunk_bytes must be positive, got {max_chunk_bytes}")
    return max(1, max_chunk_bytes // max(1, CHUNK_BYTES_PER_PIXEL * size[0] * size[1]))


def _probability_chunks(
    logits: torch.Tensor, size: tuple[int, int], max_chunk_bytes: int
) -> Iterator[tuple[slice, torch.FloatTensor]]:
    """The rows and full-size probabilities of consecutive chunks of masks, one chunk alive at a time."""
    step = _masks_per_chunk(size, max_chunk_bytes)
    for start in range(0, logits.shape[0], step):
        chunk = logits[start : start + step]
        # float32 whatever the model's dtype: the returned probabilities and `CHUNK_BYTES_PER_PIXEL` are float32.
        yield slice(start, start + chunk.shape[0]), resize_mask_logits(chunk.float(), size).sigmoid_()


def _areas_and_sums(
    masks: torch.BoolTensor, probabilities: torch.FloatTensor
) -> tuple[torch.LongTensor, torch.FloatTensor]:
    """The pixels inside each mask, and the sum of `probabilities` over them."""
    return masks.flatten(1).count_nonzero(-1), (probabilities * masks).flatten(1).sum(-1)


def _best_class(
    logits: torch.Tensor,
    size: tuple[int, int],
    threshold: float,
    max_chunk_bytes: int,
    probabilities: torch.FloatTensor | None = None,
) -> tuple[torch.LongTensor, torch.FloatTensor]:
    """Label map and each pixel's highest probability, by a running max over chunks of classes; fills
    `probabilities` (`(num_classes, *size)`) on the way when given."""
    best = torch.zeros(size, device=logits.device)
    labels = torch.full(size, BACKGROUND, dtype=torch.long, device=logits.device)
    for rows, chunk in _probability_chunks(logits, size, max_chunk_bytes):
        if probabilities is not None:
            probabilities[rows] = chunk
        chunk_best, chunk_labels = chunk.max(dim=0)
        # Strictly greater (and `max` picks the first of equals), so ties go to the lowest class index, as one `max`
        # over all classes would give; a probability of exactly 0 only ever ends up as background.
        is_better = chunk_best > best
        torch.where(is_better, chunk_best, best, out=best)
        torch.where(is_better, chunk_labels.add_(rows.start), labels, out=labels)
    return labels.masked_fill_(best <= threshold, BACKGROUND), best


__all__ = [
    "BACKGROUND",
    "MaskPrediction",
    "PackedMasks",
    "check_finite_mask_logits",
    "check_threshold",
    "label_map_from_logits",
    "logits_to_prediction",
    "logits_to_semantic_prediction",
    "resize_mask_logits",
    "threshold_logit",
]
