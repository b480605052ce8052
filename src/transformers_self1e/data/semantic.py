"""Semantic segmentation from label maps (ADE20K, COCO-Stuff, ... style): each image is asked about a few classes."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
from datasets import Dataset

from .masks import empty_rle, encode_rle
from .schema import image_rng, rows_to_dataset, segmentation_row


def load_semantic_segmentation(
    image_dir: str | Path,
    label_dir: str | Path,
    class_names: Sequence[str | None],
    source: str,
    classes_per_image: int = 3,
    negatives_per_image: int = 0,
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    image_suffix: str = ".jpg",
    label_suffix: str = ".png",
    seed: int = 0,
) -> Dataset:
    """
    Semantic segmentation rows (schema in `transformers_self1e.data.schema`) from images and label-map PNGs.

    Every label map `label_dir/<name><label_suffix>` pairs with `image_dir/<name><image_suffix>`. Per image, up to
    `classes_per_image` of the classes present are drawn without replacement (as the reference training does, 3 by
    default), each becoming one row whose mask is that class's pixels, plus `negatives_per_image` absent classes with
    an all-zero mask (`no_target=True`).

    Args:
        class_names: the name of every label value; `None` for values never asked about (LISA skips COCO-Stuff's
            merged "-other" classes this way).
        source: the `source` column, e.g. `"ade20k"`.
        ignore_index: the label value of unlabelled pixels; values outside `class_names` are ignored too.
        reduce_zero_label: labels are shifted down by one and 0 becomes `ignore_index` (ADE20K, where 0 is "other").
        seed: seeds the draws and the prompt templates, per image.
    """
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    label_files = sorted(label_dir.glob(f"*{label_suffix}"))
    if not label_files:
        raise FileNotFoundError(f"no *{label_suffix} label maps in {label_dir}")
    named_classes = {index for index, name in enumerate(class_names) if name is not None}

    rows = []
    for label_file in label_files:
        name = label_file.name[: -len(label_suffix)]
        image_file = image_dir / f"{name}{image_suffix}"
        if not image_file.is_file():
            raise FileNotFoundError(f"label map {label_file} has no image {image_file}")
        labels = np.asarray(PIL.Image.open(label_file)).astype(np.int64)
        if labels.ndim != 2:
            raise ValueError(f"{label_file} is not a single-channel label map (shape {labels.shape})")
        if reduce_zero_label:
            labels = np.where(labels == 0, ignore_index, labels - 1)
        present = [value for value in np.unique(labels).tolist() if value != ignore_index and value in named_classes]

        rng = image_rng(seed, name)
        positives = rng.sample(present, min(classes_per_image, len(present)))
        absent = sorted(named_classes - set(present))
        negatives = rng.sample(absent, min(negatives_per_image, len(absent)))
        for class_id in positives:
            mask = encode_rle(labels == class_id)
            rows.append(segmentation_row(image_file, class_names[class_id], mask, "semantic", source, rng))
        for class_id in negatives:
            mask = empty_rle(*labels.shape)
            rows.append(
                segmentation_row(image_file, class_names[class_id], mask, "semantic", source, rng, no_target=True)
            )
    return rows_to_dataset(rows)


__all__ = ["load_semantic_segmentation"]
