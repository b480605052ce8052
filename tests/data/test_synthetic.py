"""Tests of the synthetic referring-segmentation generator.

Expressions are checked with a parser/evaluator written here from the grammar in the module docstring, independently of
the generator's own selection code.
"""

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from transformers_self1e.data import (
    COLOR_PALETTE,
    SyntheticConfig,
    compared_quantity,
    generate_referring_sample,
    generate_referring_scene,
    make_synthetic_referring_dataset,
    make_synthetic_scene_dataset,
    object_pixels,
)

SHAPE_WORDS = {"circle", "square", "rectangle", "triangle", "ring", "bar"}
# relation word or phrase -> (compared quantity, which end wins, phrasing used for exactly two candidates)
LEADING_RELATIONS = {
    "small": ("size", "min", True),
    "large": ("size", "max", True),
    "smallest": ("size", "min", False),
    "biggest": ("size", "max", False),
    "leftmost": ("x", "min", False),
    "rightmost": ("x", "max", False),
    "topmost": ("y", "min", False),
    "bottommost": ("y", "max", False),
}
TRAILING_RELATIONS = {
    "on the left": ("x", "min", True),
    "on the right": ("x", "max", True),
    "at the top": ("y", "min", True),
    "at the bottom": ("y", "max", True),
}


def parse(expression: str) -> tuple[str, str | None, str, tuple[str, str, bool] | None]:
    """(quantifier, colour or None, shape noun or "shape", relation or None)."""
    quantifier, *words = expression.split()
    relation = None
    if " ".join(words[-3:]) in TRAILING_RELATIONS:
        relation, words = TRAILING_RELATIONS[" ".join(words[-3:])], words[:-3]
    elif words[0] in LEADING_RELATIONS:
        relation, words = LEADING_RELATIONS[words[0]], words[1:]
    *colors, noun = words
    if quantifier == "all":
        assert relation is None and noun.endswith("s"), expression
        noun = noun[:-1]
    assert quantifier in ("the", "all") and len(colors) <= 1, expression
    assert all(color in COLOR_PALETTE for color in colors) and noun in SHAPE_WORDS | {"shape"}, expression
    return quantifier, colors[0] if colors else None, noun, relation


def evaluate(expression: str, objects: list[dict], config: SyntheticConfig) -> list[int]:
    """Indices of the objects `expression` selects; [] when it selects nothing or nothing clearly."""
    _, color, noun, relation = parse(expression)
    candidates = [
        index for index, obj in enumerate(objects) if color in (None, obj["color"]) and noun in ("shape", obj["shape"])
    ]
    if relation is None or len(candidates) < 2:
        return candidates
    quantity, end, two_candidate_phrasing = relation
    assert two_candidate_phrasing == (len(candidates) == 2), (expression, len(candidates))

    def value(index: int) -> float:
        obj = objects[index]
        return obj["size"] if quantity == "size" else obj["center"][0 if quantity == "x" else 1]

    best, runner_up = sorted(candidates, key=value, reverse=end == "max")[:2]
    if quantity == "size":
        assert all(objects[index]["shape"] != "bar" for index in candidates), expression
        low, high = sorted((value(best), value(runner_up)))
        clear = low * config.size_ratio <= high
    else:
        side = config.width_height[0 if quantity == "x" else 1]
        clear = abs(value(best) - value(runner_up)) >= config.position_margin * side
    return [best] if clear else []


def samples(seed: int, count: int, config: SyntheticConfig) -> list[tuple[np.ndarray, str, np.ndarray, dict]]:
    return [
        (np.asarray(image), expression, mask, info)
        for image, expression, mask, info in (generate_referring_sample(seed, index, config) for index in range(count))
    ]


def test_same_seed_gives_identical_bytes() -> None:
    first = make_synthetic_referring_dataset(6, seed=7)
    second = make_synthetic_referring_dataset(6, seed=7)
    assert first.data.table.equals(second.data.table)


def test_different_seeds_differ() -> None:
    first = make_synthetic_referring_dataset(6, seed=7)
    second = make_synthetic_referring_dataset(6, seed=8)
    for row_a, row_b in zip(first, second):
        assert not np.array_equal(np.asarray(row_a["image"]), np.asarray(row_b["image"]))


def test_sample_does_not_depend_on_dataset_length() -> None:
    short = make_synthetic_referring_dataset(3, seed=5)
    long = make_synthetic_referring_dataset(8, seed=5)
    assert short.data.table.equals(long.select(range(3)).data.table)
    image, expression, mask, _ = generate_referring_sample(5, 2)
    row = long[2]
    assert row["sample_id"] == 2 and row["expression"] == expression
    assert np.array_equal(np.asarray(row["image"]), np.asarray(image))
    assert np.array_equal(np.asarray(row["mask"]) > 0, mask)


def test_mask_is_exactly_the_visible_target_pixels() -> None:
    config = SyntheticConfig(multi_target_rate=0.2, thin_bar_rate=0.3, ring_rate=0.2)
    occluded = unoccluded = 0
    for image, expression, mask, info in samples(seed=0, count=150, config=config):
        objects, targets = info["objects"], info["target_indices"]
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        assert mask.sum() == sum(objects[index]["visible_area"] for index in targets), expression
        mask_colors = {tuple(pixel) for pixel in image[mask]}
        assert mask_colors <= {COLOR_PALETTE[objects[index]["color"]] for index in targets}, expression
        for index in targets:
            target = objects[index]
            has_color = (image == COLOR_PALETTE[target["color"]]).all(axis=-1)
            x0, y0, x1, y1 = target["bbox"]
            # same-colour objects never share a bbox region, so the colour inside the bbox is this object's alone
            in_box = np.zeros_like(mask)
            in_box[y0:y1, x0:x1] = True
            assert np.array_equal(has_color & in_box, mask & has_color & in_box), expression
            assert (has_color & in_box).sum() == target["visible_area"], expression
            others = [obj for i, obj in enumerate(objects) if i not in targets and obj["color"] == target["color"]]
            outside = has_color & ~mask
            for other in others:
                ox0, oy0, ox1, oy1 = other["bbox"]
                outside[oy0:oy1, ox0:ox1] = False
            assert not outside.any(), expression
            if target["visible_area"] == target["area"]:
                unoccluded += 1
            else:
                occluded += 1
                assert target["visible_area"] >= config.min_visible_fraction * target["area"]
    assert occluded > 0 and unoccluded > 0


def test_every_expression_selects_exactly_its_targets() -> None:
    config = SyntheticConfig(multi_target_rate=0.2)
    kinds = Counter()
    for _, expression, mask, info in samples(seed=1, count=300, config=config):
        selected = evaluate(expression, info["objects"], config)
        assert selected == info["target_indices"], (expression, info)
        kinds[info["expression_kind"]] += 1
        if info["multi_target"]:
            assert expression.startswith("all ") and len(selected) >= 2
        elif not info["no_target"]:
            assert expression.startswith("the ") and len(selected) == 1
            target = info["objects"][selected[0]]
            assert (info["target_shape"], info["target_color"]) == (target["shape"], target["color"])
            assert info["target_size_class"] == target["size_class"]
    assert set(kinds) == {"attribute", "size", "position", "multi", "no_target"}, kinds


def test_compared_quantity_matches_the_parsed_relation() -> None:
    quantities = Counter()
    for _, expression, _, info in samples(seed=2, count=300, config=SyntheticConfig(multi_target_rate=0.2)):
        relation = parse(expression)[3]
        quantities[compared_quantity(expression)] += 1
        assert compared_quantity(expression) == (relation[0] if relation else None), expression
    assert set(quantities) == {"size", "x", "y", None}, quantities


def test_no_target_samples_describe_an_absent_object() -> None:
    config = SyntheticConfig(no_target_rate=1.0)
    for _, expression, mask, info in samples(seed=2, count=40, config=config):
        assert info["no_target"] and info["target_indices"] == [] and info["target_size_class"] == "none"
        assert not mask.any()
        assert evaluate(expression, info["objects"], config) == []
        assert expression == f"the {info['target_color']} {info['target_shape']}"
        present = {(obj["color"], obj["shape"]) for obj in info["objects"]}
        assert (info["target_color"], info["target_shape"]) not in present


def test_default_rates() -> None:
    kinds = Counter(info["expression_kind"] for *_, info in samples(seed=3, count=300, config=SyntheticConfig()))
    assert kinds["multi"] == 0
    assert 15 <= kinds["no_target"] <= 45, kinds


@pytest.mark.parametrize("image_size", [112, 448])
def test_thin_bars_are_thin_and_small_objects_small(image_size: int) -> None:
    config = SyntheticConfig(image_size=image_size, thin_bar_rate=0.5, small_object_rate=0.5)
    thin_targets = 0
    for _, expression, mask, info in samples(seed=4, count=40, config=config):
        for obj in info["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            short_side, long_side = sorted((x1 - x0, y1 - y0))
            if obj["shape"] == "bar":
                assert obj["size_class"] == "thin" and 1 <= short_side <= 3 and long_side >= image_size // 4
            if obj["size_class"] == "small":
                assert long_side <= max(6, round(0.08 * image_size)) + 1
        if info["target_size_class"] == "thin" and not info["multi_target"]:
            thin_targets += 1
            rows, cols = np.nonzero(mask)
            assert min(np.ptp(rows), np.ptp(cols)) + 1 <= 3, expression
    assert thin_targets > 0


def test_dataset_schema() -> None:
    dataset = make_synthetic_referring_dataset(4, seed=0)
    features = {name: type(feature).__name__ for name, feature in dataset.features.items()}
    assert features == {
        "sample_id": "Value",
        "image": "Image",
        "expression": "Value",
        "mask": "Image",
        "no_target": "Value",
        "multi_target": "Value",
        "expression_kind": "Value",
        "target_shape": "Value",
        "target_color": "Value",
        "target_size_class": "Value",
    }
    assert dataset.features["sample_id"].dtype == "int64" and dataset.features["no_target"].dtype == "bool"
    assert dataset.features["mask"].mode == "L"
    assert dataset["sample_id"] == [0, 1, 2, 3]
    for row in dataset:
        assert isinstance(row["image"], Image.Image) and row["image"].mode == "RGB" and row["image"].size == (224, 224)
        assert row["mask"].mode == "L" and row["mask"].size == (224, 224)
        assert set(np.unique(np.asarray(row["mask"]))) <= {0, 255}
        assert isinstance(row["expression"], str) and isinstance(row["no_target"], bool)
        assert row["target_size_class"] in {"thin", "small", "regular", "mixed", "none"}


def test_non_square_images() -> None:
    config = SyntheticConfig(image_size=(320, 224))
    row = make_synthetic_referring_dataset(2, seed=0, config=config)[1]
    assert row["image"].size == (320, 224) and row["mask"].size == (320, 224)
    for image, expression, mask, info in samples(seed=6, count=60, config=config):
        assert image.shape == (224, 320, 3) and mask.shape == (224, 320)
        assert evaluate(expression, info["objects"], config) == info["target_indices"]
        assert all(
            0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 224 for x0, y0, x1, y1 in (o["bbox"] for o in info["objects"])
        )


@pytest.mark.parametrize(
    "overrides",
    [
        {"no_target_rate": 1.5},
        {"colors": ("red", "magenta")},
        {"image_size": (320, 32)},
        {"objects_per_image": (3, 2)},
    ],
)
def test_config_rejects_bad_values(overrides: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(**overrides)


def test_scene_expressions_each_select_exactly_their_masks() -> None:
    config = SyntheticConfig(image_size=64)
    counts = Counter()
    for index in range(60):
        image, expressions, masks, info = generate_referring_scene(3, index, 3, config)
        pixels, objects = np.asarray(image), info["objects"]
        assert 1 <= len(expressions) <= 3 and len(set(expressions)) == len(expressions)
        assert len(masks) == len(expressions) == len(info["expression_kinds"])
        for expression, mask, kind in zip(expressions, masks, info["expression_kinds"]):
            selected = evaluate(expression, objects, config)
            assert (kind == "no_target") == (not selected), expression
            assert mask.shape == pixels.shape[:2] and mask.sum() == sum(objects[i]["visible_area"] for i in selected)
            assert {tuple(pixel) for pixel in pixels[mask]} <= {COLOR_PALETTE[objects[i]["color"]] for i in selected}
        counts[len(expressions)] += 1
    assert counts[3] > 40


def test_scene_dataset_rows_equal_the_generator() -> None:
    dataset = make_synthetic_scene_dataset(3, seed=4, num_expressions=2, config=SyntheticConfig(image_size=64))
    image, expressions, masks, info = generate_referring_scene(4, 2, 2, SyntheticConfig(image_size=64))
    row = dataset[2]
    assert row["expressions"] == expressions and row["expression_kinds"] == info["expression_kinds"]
    assert np.array_equal(np.asarray(row["image"]), np.asarray(image))
    assert all(np.array_equal(np.asarray(got) > 0, want) for got, want in zip(row["masks"], masks))
    parallel = make_synthetic_scene_dataset(
        5, seed=4, num_expressions=2, config=SyntheticConfig(image_size=64), num_proc=2
    )
    assert parallel[2]["expressions"] == expressions and parallel[:3]["expressions"] == dataset["expressions"]
    assert np.array_equal(
        np.asarray(parallel[4]["image"]),
        np.asarray(generate_referring_scene(4, 4, 2, SyntheticConfig(image_size=64))[0]),
    )
    with pytest.raises(ValueError, match="num_expressions"):
        generate_referring_scene(4, 0, 0)


def test_object_pixels_are_exactly_the_visible_objects() -> None:
    config = SyntheticConfig(image_size=64, thin_bar_rate=0.3, ring_rate=0.3)
    for image, expression, mask, info in samples(seed=6, count=40, config=config):
        objects = object_pixels(image)
        assert objects.sum() == sum(obj["visible_area"] for obj in info["objects"]), expression
        assert not (mask & ~objects).any()
