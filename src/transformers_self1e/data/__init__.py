"""Training and evaluation data for SELF1E.

The training loaders (`load_referring_segmentation`, `load_semantic_segmentation`, `load_reason_seg`,
`load_llava_vqa`) all return a `datasets.Dataset` with the one column schema of `schema.self1e_features()`:
`image`, `conversation`, `expressions`, `masks` (COCO RLE, one per `[SEG]`), `task`, `source`, `no_target`; see
`transformers_self1e.data.schema` for the details. `mix_datasets` combines them at the paper's sampling rates
(`SELF1E_RATES`, `SELF1E_SEG_RATES`), and `transformers_self1e.training.Self1EDataCollator` turns rows into batches.

The synthetic generator and `SyntheticReferringRows` need numpy and PIL only; everything else needs the `data` extra
(`datasets`, `pycocotools`) and is imported on first use.
"""

import importlib

from .synthetic import (
    COLOR_PALETTE,
    SyntheticConfig,
    SyntheticReferringRows,
    compared_quantity,
    generate_referring_sample,
    generate_referring_scene,
    make_synthetic_referring_dataset,
    make_synthetic_scene_dataset,
    object_pixels,
    synthetic_dataset_features,
)

_LAZY_EXPORTS = {
    "masks": ("decode_rle", "empty_rle", "encode_rle", "merge_rles", "to_binary_mask"),
    "mixing": ("SELF1E_RATES", "SELF1E_SEG_RATES", "mix_datasets"),
    "reason_seg": ("load_reason_seg", "reason_seg_mask"),
    "referring": ("load_referring_segmentation",),
    "schema": ("TASKS", "image_rng", "rows_to_dataset", "segmentation_row", "self1e_features"),
    "semantic": ("load_semantic_segmentation",),
    "vqa": ("llava_to_conversation", "load_llava_vqa"),
}
_MODULE_OF = {name: module for module, names in _LAZY_EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)


__all__ = [
    "COLOR_PALETTE",
    "SELF1E_RATES",
    "SELF1E_SEG_RATES",
    "TASKS",
    "SyntheticConfig",
    "SyntheticReferringRows",
    "compared_quantity",
    "decode_rle",
    "empty_rle",
    "encode_rle",
    "generate_referring_sample",
    "generate_referring_scene",
    "image_rng",
    "llava_to_conversation",
    "load_llava_vqa",
    "load_reason_seg",
    "load_referring_segmentation",
    "load_semantic_segmentation",
    "make_synthetic_referring_dataset",
    "make_synthetic_scene_dataset",
    "merge_rles",
    "mix_datasets",
    "object_pixels",
    "reason_seg_mask",
    "rows_to_dataset",
    "segmentation_row",
    "self1e_features",
    "synthetic_dataset_features",
    "to_binary_mask",
]
