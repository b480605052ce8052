"""Referring segmentation in the refer toolkit's COCO format: RefCOCO, RefCOCO+, RefCOCOg and gRefCOCO."""

import contextlib
import io
import json
import pickle
from collections import defaultdict
from pathlib import Path

from datasets import Dataset
from pycocotools.coco import COCO

from .masks import merge_rles
from .schema import image_rng, rows_to_dataset, segmentation_row

NO_TARGET_ANN_ID = -1  # gRefCOCO's `ann_id` of an expression that matches nothing


def load_referring_segmentation(
    refs_file: str | Path,
    instances_file: str | Path,
    image_dir: str | Path,
    split: str = "train",
    expressions_per_image: int | None = 3,
    seed: int = 0,
    source: str | None = None,
) -> Dataset:
    """
    Referring segmentation rows (schema in `transformers_self1e.data.schema`) from the refer toolkit's files.

    Args:
        refs_file: `refs(unc).p` / `refs(umd).p` (a pickle: only load files you trust) of RefCOCO/RefCOCO+/RefCOCOg, or
            gRefCOCO's `grefs(unc).json`. A ref has `image_id`, `split`, `sentences` (`[{"sent": ...}]`) and `ann_id`:
            one annotation, or with gRefCOCO a list of them (the mask is their union) or `[-1]` for an expression that
            matches nothing (an all-zero mask, `no_target=True`).
        instances_file: the dataset's `instances.json` (COCO images and annotations; polygons, RLE and uncompressed
            RLE are all decoded by pycocotools).
        image_dir: the folder holding the images' `file_name`s (COCO train2014).
        split: the refs' split to keep.
        expressions_per_image: how many of an image's expressions to draw, without replacement, as the reference
            training does per image (3); `None` keeps them all. Each becomes one row.
        seed: seeds the draw and the prompt templates, per image.
        source: the `source` column; defaults to the refs file's folder name (e.g. `"refcoco"`).
    """
    refs_file, image_dir = Path(refs_file), Path(image_dir)
    source = source or refs_file.parent.name
    refs = [ref for ref in _read_refs(refs_file) if ref["split"] == split]
    # pycocotools prints progress while indexing; keep the loader quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(instances_file))

    expressions_by_image = defaultdict(list)
    for ref in refs:
        for sentence in ref["sentences"]:
            if sentence["sent"].strip():
                expressions_by_image[ref["image_id"]].append((sentence["sent"].strip(), ref))

    rows = []
    for image_id, expressions in expressions_by_image.items():
        image_info = coco.imgs[image_id]
        rng = image_rng(seed, image_id)
        if expressions_per_image is not None and len(expressions) > expressions_per_image:
            expressions = rng.sample(expressions, expressions_per_image)
        for expression, ref in expressions:
            ann_ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
            no_target = bool(ref.get("no_target", False)) or ann_ids == [NO_TARGET_ANN_ID]
            annotations = [] if no_target else [coco.anns[ann_id] for ann_id in ann_ids]
            mask = merge_rles(
                (coco.annToRLE(annotation) for annotation in annotations), image_info["height"], image_info["width"]
            )
            rows.append(
                segmentation_row(
                    image_dir / image_info["file_name"],
                    expression,
                    mask,
                    "referring",
                    source,
                    rng,
                    no_target=no_target,
                )
            )
    return rows_to_dataset(rows)


def _read_refs(refs_file: Path) -> list[dict]:
    if refs_file.suffix == ".json":
        return json.loads(refs_file.read_text())
    with refs_file.open("rb") as handle:
        return pickle.load(handle)


__all__ = ["load_referring_segmentation"]
