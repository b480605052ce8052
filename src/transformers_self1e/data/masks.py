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
    rles = [_pycocotools_rle(rle) for rle in rles]
    if not rles:
        return empty_rle(height, width)
    merged = _mask_utils().merge(rles, intersect=False)
    return {"size": [int(side) for side in merged["size"]], "counts": merged["counts"].decode("ascii")}


def decode_rle(rle: Mapping) -> np.ndarray:
    """A `(height, width)` uint8 0/1 mask from a compressed (str or bytes counts) or uncompressed (list counts) RLE."""
    return _mask_utils().decode(_pycocotools_rle(rle))


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


def _pycocotools_rle(rle: Mapping) -> dict:
    height, width = (int(side) for side in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        return _mask_utils().frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


__all__ = ["decode_rle", "empty_rle", "encode_rle", "merge_rles", "to_binary_mask"]
