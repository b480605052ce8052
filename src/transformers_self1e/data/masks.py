"""Binary masks as COCO run-length encodings (RLE): a few hundred bytes per mask in a dataset, decoded only when batched.

An RLE here is `{"size": [height, width], "counts": str}`, pycocotools' compressed RLE with the counts as text so that
it fits a `datasets` string column. pycocotools (the `data` extra) is imported on first use, so masks given as
arrays, images or tensors need nothing beyond the core dependencies.
"""

from collections.abc import Iterable, Mapping
from types import ModuleType

import numpy as np
import PIL.Image
import torch

from ..modeling.image_processing_self1e import DEFAULT_MAX_IMAGE_PIXELS


def encode_rle(mask: np.ndarray) -> dict:
    """The RLE of a `(height, width)` mask (non-zero = inside)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (height, width), got shape {mask.shape}")
    rle = _mask_utils().encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")}


def empty_rle(height: int, width: int) -> dict:
    """The RLE of an all-zero mask, e.g. for an expression that matches nothing."""
    return encode_rle(np.zeros((height, width), dtype=np.uint8))


def merge_rles(rles: Iterable[Mapping], height: int, width: int) -> dict:
    """The union of RLEs of one image (an empty mask when there are none)."""
    rles = [_checked_rle(rle)[0] for rle in rles]
    if not rles:
        return empty_rle(height, width)
    merged = _mask_utils().merge(rles, intersect=False)
    return {"size": [int(side) for side in merged["size"]], "counts": merged["counts"].decode("ascii")}


def decode_rle(rle: Mapping) -> np.ndarray:
    """A `(height, width)` uint8 0/1 mask from a compressed (str or bytes counts) or uncompressed (list counts) RLE.

    Raises:
        ValueError: `rle` is not an RLE: `size` is not two positive integers, or `counts` do not encode a mask of
            that size.
        TypeError: `counts` is neither a list, a str nor bytes.
    """
    structure, decoded = _checked_rle(rle)
    return _mask_utils().decode(structure) if decoded is None else decoded


def to_binary_mask(mask) -> torch.Tensor:
    """A `(height, width)` float 0/1 tensor from an RLE, a PIL image, a numpy array or a tensor (non-zero = inside)."""
    if isinstance(mask, Mapping):
        array = decode_rle(mask)
    elif isinstance(mask, PIL.Image.Image):
        array = np.asarray(mask)
    elif isinstance(mask, torch.Tensor):
        array = mask.detach().cpu().numpy()
    else:
        array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"a mask must be (height, width), got shape {array.shape}")
    return torch.from_numpy(array != 0).float()


def _mask_utils() -> ModuleType:
    """pycocotools' RLE functions, imported only when an RLE is encoded or decoded."""
    from pycocotools import mask

    return mask


def _checked_rle(rle: Mapping) -> tuple[dict, np.ndarray | None]:
    """`rle` in the form pycocotools takes, checked first (pycocotools decodes malformed counts into masks of arbitrary
    values without an error), and for compressed counts the mask their check decoded (None for a list of runs)."""
    if not isinstance(rle, Mapping) or not {"size", "counts"} <= rle.keys():
        keys = sorted(map(str, rle.keys())) if isinstance(rle, Mapping) else type(rle).__name__
        raise ValueError(f"a run-length mask needs 'size' and 'counts', got {keys}")
    size, counts = rle["size"], rle["counts"]
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(side, (int, np.integer)) and not isinstance(side, bool) and side > 0 for side in size)
    ):
        raise ValueError(f"a run-length mask's size must be [height, width], two positive integers, got {size!r}")
    height, width = (int(side) for side in size)
    if height * width > DEFAULT_MAX_IMAGE_PIXELS:
        raise ValueError(
            f"a run-length mask of {height}x{width} is larger than any image read ({DEFAULT_MAX_IMAGE_PIXELS} pixels)"
        )
    if isinstance(counts, list):
        if not all(isinstance(run, (int, np.integer)) and not isinstance(run, bool) and run >= 0 for run in counts):
            raise ValueError("a run-length mask's counts list must hold non-negative integers (run lengths)")
        runs = [int(run) for run in counts]
        if sum(runs) != height * width:
            raise ValueError(f"a run-length mask's runs cover {sum(runs)} pixels, not its {height}x{width}")
        return _mask_utils().frPyObjects({"size": [height, width], "counts": runs}, height, width), None
    if isinstance(counts, str):
        if not counts.isascii():
            raise ValueError("a run-length mask's counts string must be pycocotools' ASCII encoding")
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise TypeError(
            f"a run-length mask's counts must be a str, bytes or a list of run lengths, got {type(counts).__name__}"
        )
    compressed = {"size": [height, width], "counts": counts}
    # A well-formed string is what pycocotools encodes its own decoding into.
    try:
        mask = _mask_utils().decode(compressed)
        valid = mask.max() <= 1 and _mask_utils().encode(np.asfortranarray(mask))["counts"] == counts
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"a run-length mask's counts do not encode a {height}x{width} mask")
    return compressed, mask


__all__ = ["decode_rle", "empty_rle", "encode_rle", "merge_rles", "to_binary_mask"]
