"""ReasonSeg (LISA's reasoning segmentation data): an image, and a LabelMe-style JSON of queries and polygons."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
from datasets import Dataset

from .masks import encode_rle
from .schema import image_rng, rows_to_dataset, segmentation_row

TARGET_VALUE, IGNORE_VALUE = 1, 255


def load_reason_seg(
    directory: str | Path,
    queries_per_image: int = 3,
    image_suffix: str = ".jpg",
    seed: int = 0,
    source: str = "reason_seg",
) -> Dataset:
    """
    Reasoning segmentation rows (schema in `transformers_self1e.data.schema`) from a ReasonSeg split folder.

    Every `<name>.json` in `directory` pairs with `<name><image_suffix>` and holds `text` (the queries),
    `is_sentence` (full-sentence instructions get the long question templates, otherwise the short ones) and `shapes`
    (`{"label", "points"}` polygons). Up to `queries_per_image` queries are drawn per image, each becoming one row
    with the image's target mask.

    The mask follows LISA: polygons are painted from the largest to the smallest, "target" ones as the target and
    "ignore" ones as not the target ("flag" ones are skipped), each with its outline, its points truncated to integers.
    """
    directory = Path(directory)
    json_files = sorted(directory.glob("*.json"))
    if not json_files:
        raise FileNotFoundError(f"no ReasonSeg .json files in {directory}")
    rows = []
    for json_file in json_files:
        image_file = json_file.with_suffix(image_suffix)
        if not image_file.is_file():
            raise FileNotFoundError(f"{json_file} has no image {image_file}")
        annotation = _read_json(json_file)
        with PIL.Image.open(image_file) as image:
            width, height = image.size
        mask = encode_rle(reason_seg_mask(annotation["shapes"], height, width))
        prompt_type = "instruction" if annotation["is_sentence"] else "short"
        queries = [query.strip() for query in annotation["text"] if query.strip()]
        rng = image_rng(seed, json_file.stem)
        for query in rng.sample(queries, min(queries_per_image, len(queries))):
            rows.append(segmentation_row(image_file, query, mask, "reasoning", source, rng, prompt_type=prompt_type))
    return rows_to_dataset(rows)


def reason_seg_mask(shapes: list[dict], height: int, width: int) -> np.ndarray:
    """The `(height, width)` bool target mask of ReasonSeg polygons (see `load_reason_seg`)."""
    polygons = []
    for shape in shapes:
        label = shape["label"].lower()
        points = [tuple(point) for point in np.asarray(shape["points"], dtype=np.float64).astype(np.int32).tolist()]
        if label == "flag" or len(points) < 2:
            continue
        value = IGNORE_VALUE if "ignore" in label else TARGET_VALUE
        polygons.append((_polygon_area(points, height, width), value, points))
    canvas = PIL.Image.new("L", (width, height), 0)
    draw = PIL.ImageDraw.Draw(canvas)
    # Larger first, so smaller polygons inside them (e.g. an ignored hole in a target) are painted over them.
    for _, value, points in sorted(polygons, key=lambda polygon: polygon[0], reverse=True):
        draw.polygon(points, fill=value, outline=value)
    return np.asarray(canvas) == TARGET_VALUE


def _polygon_area(points: list[tuple[int, int]], height: int, width: int) -> int:
    canvas = PIL.Image.new("1", (width, height), 0)
    PIL.ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    return int(np.asarray(canvas).sum())


def _read_json(json_file: Path) -> dict:
    # Some ReasonSeg files are not UTF-8 but Windows-1252, which LISA's reader falls back to as well.
    raw = json_file.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return json.loads(raw.decode("cp1252"))


__all__ = ["load_reason_seg", "reason_seg_mask"]
