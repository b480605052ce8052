"""Deterministic synthetic referring-segmentation data: coloured shapes, a referring expression, a pixel-exact mask.

An image holds flat-coloured circles, squares, rectangles, triangles, rings (annuli) and thin bars (1-3 px wide,
horizontal or vertical) on a plain or lightly textured grey background. Objects are drawn in list order, so later
objects occlude earlier ones; every object keeps at least `min_visible_fraction` of its pixels, and objects of the same
colour never touch. All objects are rasterised once into an integer label map, and both the image colours and the
masks are read from it, so a mask is exactly the visible pixels of its object(s) (no anti-aliasing anywhere).

Sample `index` of `seed` draws everything from `numpy.random.default_rng([seed, index])`: it does not depend on how
many samples are generated, and the same seed and config always give identical bytes.

Expression grammar (the only forms generated). `<desc>` is `[<colour>] <noun>`, where `<noun>` is a shape name
(circle, square, rectangle, triangle, ring, bar) or `shape` (any shape); the candidates of `<desc>` are the objects
matching it.

* `the <desc>`: the only candidate (kind `"attribute"`).
* `the small|large <desc>` (two candidates), `the smallest|biggest <desc>` (three or more) (kind `"size"`): the
  candidate whose `size` (pixel area of the filled outline, a ring counted with its hole) is at most / at least
  `1 / size_ratio` / `size_ratio` times every other candidate's. Never generated when a candidate is a bar.
* `the <desc> on the left|on the right|at the top|at the bottom` (two candidates),
  `the leftmost|rightmost|topmost|bottommost <desc>` (three or more) (kind `"position"`): the candidate whose bounding
  box centre is further left/right/up/down than every other candidate's by `position_margin` of the image side.
* `all <colour> shapes`, `all <noun>s`, `all <colour> <noun>s` (kind `"multi"`): two or more candidates, union mask.
* `the <colour> <noun>` matching no object (kind `"no_target"`): an all-zero mask.
"""

import collections.abc
import hashlib
import operator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import datasets

COLOR_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (50, 90, 230),
    "yellow": (240, 220, 50),
    "white": (245, 245, 245),
    "orange": (245, 140, 30),
    "purple": (150, 60, 200),
    "cyan": (40, 210, 220),
    "pink": (250, 130, 200),
}
SOLID_SHAPES = ("circle", "square", "rectangle", "triangle")
ANY_SHAPE = "shape"

_BACKGROUND_LEVELS = (20, 90)  # grey levels; with the texture amplitude they stay far from every palette colour
_TEXTURE_AMPLITUDE = 10
_TEXTURE_CELL_SIZES = (4, 16)
_MIN_EXTENT_PX = 6  # keeps ring radii >= 3: room for a hole and a 1 px wall
_MIN_RECTANGLE_SIDE_PX = 4
_MIN_RECTANGLE_ASPECT = 1.5  # long / short side, so rectangles never pass for squares
_MAX_RECTANGLE_ASPECT = 2.5
_MIN_RING_HOLE_RADIUS_PX = 2
_SAME_COLOR_GAP_PX = 2
_MIN_IMAGE_SIDE_PX = 64
_PLACEMENT_ATTEMPTS = 30
_SCENE_ATTEMPTS = 100


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator. Object rates are per object, `no_target_rate`/`multi_target_rate` per sample.

    Sizes given as fractions are relative to the shorter image side, except `bar_length` (the side along the bar).
    """

    image_size: int | tuple[int, int] = 224  # side of a square image, or (width, height)
    objects_per_image: tuple[int, int] = (2, 6)  # inclusive range of objects tried; unplaceable ones are dropped
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "white", "orange", "purple")
    solid_shapes: tuple[str, ...] = SOLID_SHAPES
    thin_bar_rate: float = 0.15
    ring_rate: float = 0.15
    small_object_rate: float = 0.25  # share of solid shapes drawn at `small_extent`
    no_target_rate: float = 0.1
    multi_target_rate: float = 0.0
    textured_background_rate: float = 0.5
    bar_width: tuple[int, int] = (1, 3)  # px
    bar_length: tuple[float, float] = (0.25, 0.6)
    ring_thickness: tuple[int, int] = (2, 5)  # px
    small_extent: tuple[float, float] = (0.04, 0.08)
    regular_extent: tuple[float, float] = (0.12, 0.3)
    min_visible_fraction: float = 0.6
    size_ratio: float = 2.0
    position_margin: float = 0.1

    def __post_init__(self) -> None:
        width, height = self.width_height
        _require(min(width, height) >= _MIN_IMAGE_SIDE_PX, f"image sides must be >= {_MIN_IMAGE_SIDE_PX} px")
        _require(
            1 <= self.objects_per_image[0] <= self.objects_per_image[1], "objects_per_image must be 1 <= lo <= hi"
        )
        _require(len(self.colors) == len(set(self.colors)) > 0, "colors must be distinct and non-empty")
        _require(set(self.colors) <= COLOR_PALETTE.keys(), f"colors must come from {sorted(COLOR_PALETTE)}")
        _require(0 < len(self.solid_shapes) and set(self.solid_shapes) <= set(SOLID_SHAPES), "bad solid_shapes")
        rates = (self.thin_bar_rate, self.ring_rate, self.small_object_rate, self.no_target_rate)
        rates += (self.multi_target_rate, self.textured_background_rate)
        _require(all(0.0 <= rate <= 1.0 for rate in rates), "rates must lie in [0, 1]")
        _require(0.0 < self.min_visible_fraction <= 1.0, "min_visible_fraction must lie in (0, 1]")
        _require(self.thin_bar_rate + self.ring_rate <= 1.0, "thin_bar_rate + ring_rate must be <= 1")
        _require(
            self.no_target_rate + self.multi_target_rate <= 1.0, "no_target_rate + multi_target_rate must be <= 1"
        )
        for name in ("bar_width", "bar_length", "ring_thickness", "small_extent", "regular_extent"):
            low, high = getattr(self, name)
            _require(0 < low <= high, f"{name} must be 0 < lo <= hi")
        for name in ("bar_length", "small_extent", "regular_extent"):
            _require(getattr(self, name)[1] <= 1.0, f"{name} fractions must be <= 1")
        _require(self.size_ratio >= 1.0 and self.position_margin >= 0.0, "size_ratio >= 1, position_margin >= 0")

    @property
    def width_height(self) -> tuple[int, int]:
        """Image (width, height) in pixels."""
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        return self.image_size

    @property
    def shape_nouns(self) -> tuple[str, ...]:
        """Every shape name this config can draw."""
        optional = tuple(noun for noun, rate in (("ring", self.ring_rate), ("bar", self.thin_bar_rate)) if rate > 0)
        return self.solid_shapes + optional


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"SyntheticConfig: {message}")


@dataclass(frozen=True)
class _SceneObject:
    """One drawn object: what it is, its footprint (bool, True where drawn) and where its top-left corner sits."""

    shape: str
    color: str
    size_class: str
    footprint: np.ndarray
    size: int  # pixel area of the filled outline
    x0: int = 0
    y0: int = 0

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end-exclusive, of the whole (unoccluded) footprint."""
        height, width = self.footprint.shape
        return self.x0, self.y0, self.x0 + width, self.y0 + height

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2

    def matches(self, color: str | None, noun: str) -> bool:
        return color in (None, self.color) and noun in (ANY_SHAPE, self.shape)

    def info(self, visible_area: int) -> dict:
        return {
            "shape": self.shape,
            "color": self.color,
            "size_class": self.size_class,
            "bbox": list(self.bbox),
            "center": list(self.center),
            "size": self.size,
            "area": int(self.footprint.sum()),
            "visible_area": visible_area,
        }


@dataclass(frozen=True)
class _Referral:
    """A referring expression and what it selects (no indices for a no-target expression)."""

    expression: str
    kind: str
    target_indices: tuple[int, ...]
    target_shape: str
    target_color: str
    target_size_class: str


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * (radius + 1)


def _ring(radius: int, thickness: int) -> np.ndarray:
    return _disk(radius) & ~np.pad(_disk(radius - thickness), thickness)


def _triangle(side: int, quarter_turns: int) -> np.ndarray:
    """Isosceles triangle, base and height `side`, apex up, then turned by `quarter_turns` x 90 degrees."""
    column_offsets = np.abs(np.arange(side) + 0.5 - side / 2)
    row_half_widths = (np.arange(side) + 1) / 2
    return np.rot90(column_offsets[None, :] <= row_half_widths[:, None], quarter_turns)


def _sample_extent(rng: np.random.Generator, fractions: tuple[float, float], side: int) -> int:
    low = max(_MIN_EXTENT_PX, round(fractions[0] * side))
    return int(rng.integers(low, max(low, round(fractions[1] * side)) + 1))


def _solid_footprint(rng: np.random.Generator, shape: str, extent: int) -> np.ndarray:
    if shape == "circle":
        return _disk(extent // 2)
    if shape == "square":
        return np.ones((extent, extent), dtype=bool)
    if shape == "triangle":
        return _triangle(extent, int(rng.integers(4)))
    short = max(_MIN_RECTANGLE_SIDE_PX, round(extent / rng.uniform(_MIN_RECTANGLE_ASPECT, _MAX_RECTANGLE_ASPECT)))
    long = max(extent, int(np.ceil(_MIN_RECTANGLE_ASPECT * short)))
    return np.ones((short, long) if rng.random() < 0.5 else (long, short), dtype=bool)


def _sample_bar(rng: np.random.Generator, config: SyntheticConfig, color: str) -> _SceneObject:
    thickness = int(rng.integers(config.bar_width[0], config.bar_width[1] + 1))
    horizontal = rng.random() < 0.5
    side = config.width_height[0 if horizontal else 1]
    length = round(rng.uniform(*config.bar_length) * side)
    footprint = np.ones((thickness, length) if horizontal else (length, thickness), dtype=bool)
    return _SceneObject("bar", color, "thin", footprint, thickness * length)


def _sample_ring(rng: np.random.Generator, config: SyntheticConfig, color: str) -> _SceneObject:
    radius = _sample_extent(rng, config.regular_extent, min(config.width_height)) // 2
    thickness = int(rng.integers(config.ring_thickness[0], config.ring_thickness[1] + 1))
    thickness = min(thickness, radius - _MIN_RING_HOLE_RADIUS_PX)
    return _SceneObject("ring", color, "regular", _ring(radius, thickness), int(_disk(radius).sum()))


def _sample_solid(rng: np.random.Generator, config: SyntheticConfig, color: str) -> _SceneObject:
    shape = config.solid_shapes[rng.integers(len(config.solid_shapes))]
    size_class = "small" if rng.random() < config.small_object_rate else "regular"
    fractions = config.small_extent if size_class == "small" else config.regular_extent
    footprint = _solid_footprint(rng, shape, _sample_extent(rng, fractions, min(config.width_height)))
    return _SceneObject(shape, color, size_class, footprint, int(footprint.sum()))


def _sample_object(rng: np.random.Generator, config: SyntheticConfig) -> _SceneObject:
    """A coloured object with its footprint, not yet placed."""
    color = config.colors[rng.integers(len(config.colors))]
    draw = rng.random()
    if draw < config.thin_bar_rate:
        return _sample_bar(rng, config, color)
    if draw < config.thin_bar_rate + config.ring_rate:
        return _sample_ring(rng, config, color)
    return _sample_solid(rng, config, color)


def _boxes_near(first: _SceneObject, second: _SceneObject, gap: int) -> bool:
    ax0, ay0, ax1, ay1 = first.bbox
    bx0, by0, bx1, by1 = second.bbox
    return ax0 - gap < bx1 and bx0 - gap < ax1 and ay0 - gap < by1 and by0 - gap < ay1


def _try_place(
    rng: np.random.Generator,
    config: SyntheticConfig,
    unplaced: _SceneObject,
    placed: list[_SceneObject],
    labels: np.ndarray,
) -> tuple[_SceneObject, np.ndarray] | None:
    """Place `unplaced` on top of `placed` (label map `labels`), or None if no position keeps the scene readable."""
    width, height = config.width_height
    footprint_height, footprint_width = unplaced.footprint.shape
    for _ in range(_PLACEMENT_ATTEMPTS):
        x0 = int(rng.integers(width - footprint_width + 1))
        y0 = int(rng.integers(height - footprint_height + 1))
        candidate = replace(unplaced, x0=x0, y0=y0)
        if any(
            other.color == candidate.color and _boxes_near(other, candidate, _SAME_COLOR_GAP_PX) for other in placed
        ):
            continue
        new_labels = labels.copy()
        new_labels[y0 : y0 + footprint_height, x0 : x0 + footprint_width][candidate.footprint] = len(placed) + 1
        visible = np.bincount(new_labels.ravel(), minlength=len(placed) + 2)[1:]
        drawn = [obj.footprint.sum() for obj in (*placed, candidate)]
        if all(seen >= config.min_visible_fraction * area for seen, area in zip(visible, drawn)):
            return candidate, new_labels
    return None


def _sample_scene(rng: np.random.Generator, config: SyntheticConfig) -> tuple[list[_SceneObject], np.ndarray]:
    """Objects in drawing order and the label map (0 background, k + 1 where objects[k] is visible).

    An object that finds no position keeping every object readable (see `_try_place`) is left out.
    """
    width, height = config.width_height
    labels = np.zeros((height, width), dtype=np.int16)
    objects: list[_SceneObject] = []
    low, high = config.objects_per_image
    for _ in range(int(rng.integers(low, high + 1))):
        placement = _try_place(rng, config, _sample_object(rng, config), objects, labels)
        if placement is not None:
            objects.append(placement[0])
            labels = placement[1]
    return objects, labels


def _clearly_extreme(
    target: _SceneObject, others: list[_SceneObject], key: str, smallest: bool, config: SyntheticConfig
) -> bool:
    """Whether `target` beats every other candidate on `key` ("size", "x" or "y") by the configured margin."""
    if key == "size":
        if any(obj.shape == "bar" for obj in (target, *others)):
            return False
        if smallest:
            return all(target.size * config.size_ratio <= other.size for other in others)
        return all(target.size >= config.size_ratio * other.size for other in others)
    axis = 0 if key == "x" else 1
    margin = config.position_margin * config.width_height[axis]
    if smallest:
        return all(target.center[axis] + margin <= other.center[axis] for other in others)
    return all(target.center[axis] >= other.center[axis] + margin for other in others)


# kind -> (key, smallest, template for two candidates, template for three or more)
_RELATIONS: dict[str, tuple[tuple[str, bool, str, str], ...]] = {
    "size": (
        ("size", True, "the small {desc}", "the smallest {desc}"),
        ("size", False, "the large {desc}", "the biggest {desc}"),
    ),
    "position": (
        ("x", True, "the {desc} on the left", "the leftmost {desc}"),
        ("x", False, "the {desc} on the right", "the rightmost {desc}"),
        ("y", True, "the {desc} at the top", "the topmost {desc}"),
        ("y", False, "the {desc} at the bottom", "the bottommost {desc}"),
    ),
}


def compared_quantity(expression: str) -> str | None:
    """What an expression of this generator compares objects by: "size", "x" (left/right) or "y" (top/bottom), read
    from its relation phrase; None for an expression without one."""
    for relations in _RELATIONS.values():
        for quantity, _, *templates in relations:
            for template in templates:
                prefix, suffix = template.split("{desc}")
                if expression.startswith(prefix) and expression.endswith(suffix):
                    return quantity
    return None


def _describe(color: str | None, noun: str) -> str:
    return noun if color is None else f"{color} {noun}"


def _shared(values: list[str]) -> str:
    return values[0] if len(set(values)) == 1 else "mixed"


def _referral_for(expression: str, kind: str, objects: list[_SceneObject], indices: list[int]) -> _Referral:
    targets = [objects[index] for index in indices]
    return _Referral(
        expression,
        kind,
        tuple(indices),
        _shared([obj.shape for obj in targets]),
        _shared([obj.color for obj in targets]),
        _shared([obj.size_class for obj in targets]),
    )


def _expressions_for(
    target: _SceneObject, objects: list[_SceneObject], config: SyntheticConfig
) -> dict[str, list[str]]:
    """Every unambiguous single-target expression for `target`, by kind (kinds without one are left out)."""
    by_kind: dict[str, list[str]] = {"attribute": [], "size": [], "position": []}
    for color, noun in (
        (target.color, target.shape),
        (None, target.shape),
        (target.color, ANY_SHAPE),
        (None, ANY_SHAPE),
    ):
        desc = _describe(color, noun)
        others = [obj for obj in objects if obj is not target and obj.matches(color, noun)]
        if not others:
            if (color, noun) != (None, ANY_SHAPE):
                by_kind["attribute"].append(f"the {desc}")
            continue
        for kind, relations in _RELATIONS.items():
            for key, smallest, pair_template, many_template in relations:
                if _clearly_extreme(target, others, key, smallest, config):
                    by_kind[kind].append((pair_template if len(others) == 1 else many_template).format(desc=desc))
    return {kind: expressions for kind, expressions in by_kind.items() if expressions}


def _single_target_referral(
    rng: np.random.Generator, objects: list[_SceneObject], config: SyntheticConfig
) -> _Referral | None:
    """A random referable object and a random expression for it: kind first, then phrase, each uniformly."""
    options = {index: _expressions_for(obj, objects, config) for index, obj in enumerate(objects)}
    referable = [index for index, by_kind in options.items() if by_kind]
    if not referable:
        return None
    target = referable[rng.integers(len(referable))]
    kinds = list(options[target])
    kind = kinds[rng.integers(len(kinds))]
    phrases = options[target][kind]
    return _referral_for(phrases[rng.integers(len(phrases))], kind, objects, [target])


def _multi_target_referral(rng: np.random.Generator, objects: list[_SceneObject]) -> _Referral | None:
    """`all <desc>` for a random description matching two or more objects."""
    groups: dict[str, list[int]] = {}
    for index, obj in enumerate(objects):
        for color, noun in ((obj.color, ANY_SHAPE), (None, obj.shape), (obj.color, obj.shape)):
            groups.setdefault(f"all {_describe(color, noun)}s", []).append(index)
    plural = [(expression, indices) for expression, indices in groups.items() if len(indices) >= 2]
    if not plural:
        return None
    expression, indices = plural[rng.integers(len(plural))]
    return _referral_for(expression, "multi", objects, indices)


def _no_target_referral(
    rng: np.random.Generator, objects: list[_SceneObject], config: SyntheticConfig
) -> _Referral | None:
    """`the <colour> <noun>` for an absent combination, preferring near misses (colour or shape present)."""
    present = {(obj.color, obj.shape) for obj in objects}
    colors, shapes = {obj.color for obj in objects}, {obj.shape for obj in objects}
    absent = [(color, noun) for color in config.colors for noun in config.shape_nouns if (color, noun) not in present]
    near_misses = [(color, noun) for color, noun in absent if color in colors or noun in shapes]
    pool = near_misses or absent
    if not pool:
        return None
    color, noun = pool[rng.integers(len(pool))]
    return _Referral(f"the {color} {noun}", "no_target", (), noun, color, "none")


def _draw_referral_type(rng: np.random.Generator, config: SyntheticConfig) -> str:
    draw = rng.random()
    if draw < config.no_target_rate:
        return "no_target"
    if draw < config.no_target_rate + config.multi_target_rate:
        return "multi"
    return "single"


def _refer(
    rng: np.random.Generator, referral_type: str, objects: list[_SceneObject], config: SyntheticConfig
) -> _Referral | None:
    if referral_type == "no_target":
        return _no_target_referral(rng, objects, config)
    if referral_type == "multi":
        return _multi_target_referral(rng, objects)
    return _single_target_referral(rng, objects, config)


def _background(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """Grey (height, width, 3) uint8 canvas, plain or with coarse blocky texture."""
    width, height = config.width_height
    grey = np.full((height, width), rng.integers(_BACKGROUND_LEVELS[0], _BACKGROUND_LEVELS[1] + 1), dtype=np.int16)
    if rng.random() < config.textured_background_rate:
        cell = int(rng.integers(_TEXTURE_CELL_SIZES[0], _TEXTURE_CELL_SIZES[1] + 1))
        blocks = rng.integers(
            -_TEXTURE_AMPLITUDE, _TEXTURE_AMPLITUDE + 1, size=(-(-height // cell), -(-width // cell))
        )
        grey += np.repeat(np.repeat(blocks, cell, axis=0), cell, axis=1)[:height, :width].astype(np.int16)
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


def _render(
    rng: np.random.Generator, config: SyntheticConfig, objects: list[_SceneObject], labels: np.ndarray
) -> Image.Image:
    canvas = _background(rng, config)
    for label, obj in enumerate(objects, start=1):
        canvas[labels == label] = COLOR_PALETTE[obj.color]
    return Image.fromarray(canvas)


def _referral_mask(labels: np.ndarray, referral: _Referral) -> np.ndarray:
    """The visible pixels of the referral's targets (all False for no target)."""
    return np.isin(labels, [target + 1 for target in referral.target_indices])


def _objects_info(objects: list[_SceneObject], labels: np.ndarray) -> list[dict]:
    """Each object's info, with the pixels of it left visible in the label map."""
    visible_areas = np.bincount(labels.ravel(), minlength=len(objects) + 1)[1:]
    return [obj.info(int(visible)) for obj, visible in zip(objects, visible_areas)]


def generate_referring_sample(
    seed: int, index: int, config: SyntheticConfig | None = None
) -> tuple[Image.Image, str, np.ndarray, dict]:
    """Sample `index` of `seed`: (RGB image, expression, bool mask of shape (height, width), info dict).

    The info dict holds `sample_id`, `seed`, `expression_kind` ("attribute", "size", "position", "multi",
    "no_target"), `no_target`, `multi_target`, `target_indices` (into `objects`), `target_shape`, `target_color`,
    `target_size_class` ("thin", "small", "regular"; "mixed" across multi-target objects that differ; "none" for no
    target) and `objects`: in drawing order, each with `shape`, `color`, `size_class`, `bbox` (x0, y0, x1, y1, end
    exclusive, of the unoccluded shape), `center` (of the bbox), `size` (filled-outline area used by size words),
    `area` (pixels drawn) and `visible_area` (pixels left visible).
    """
    config = config or SyntheticConfig()
    rng = np.random.default_rng([seed, index])
    referral_type = _draw_referral_type(rng, config)
    for _ in range(_SCENE_ATTEMPTS):
        objects, labels = _sample_scene(rng, config)
        referral = _refer(rng, referral_type, objects, config)
        if referral is not None:
            break
    else:
        raise ValueError(f"no {referral_type!r} expression found in {_SCENE_ATTEMPTS} scenes; loosen the config")
    image = _render(rng, config, objects, labels)
    mask = _referral_mask(labels, referral)
    info = {
        "sample_id": index,
        "seed": seed,
        "expression_kind": referral.kind,
        "no_target": referral.kind == "no_target",
        "multi_target": referral.kind == "multi",
        "target_indices": list(referral.target_indices),
        "target_shape": referral.target_shape,
        "target_color": referral.target_color,
        "target_size_class": referral.target_size_class,
        "objects": _objects_info(objects, labels),
    }
    return image, referral.expression, mask, info


def generate_referring_scene(
    seed: int, index: int, num_expressions: int, config: SyntheticConfig | None = None
) -> tuple[Image.Image, list[str], list[np.ndarray], dict]:
    """Scene `index` of `seed` with up to `num_expressions` distinct expressions about it, for training with several
    `[SEG]` turns per image (as LISA-style training does): (RGB image, expressions, bool masks, info). The info dict
    holds `expression_kinds` and `objects` (as in `generate_referring_sample`).

    Each expression's type (single, multi or no target) is drawn with the config's rates; a draw that gives no new
    expression is skipped, so a crowded-out scene may have fewer. Draws from `default_rng([seed, index,
    num_expressions])`, a stream separate from `generate_referring_sample`'s.
    """
    if num_expressions < 1:
        raise ValueError(f"num_expressions must be >= 1, got {num_expressions}")
    config = config or SyntheticConfig()
    rng = np.random.default_rng([seed, index, num_expressions])
    for _ in range(_SCENE_ATTEMPTS):
        objects, labels = _sample_scene(rng, config)
        referrals: dict[str, _Referral] = {}
        for _ in range(2 * num_expressions):
            referral = _refer(rng, _draw_referral_type(rng, config), objects, config)
            if referral is not None:
                referrals.setdefault(referral.expression, referral)
            if len(referrals) == num_expressions:
                break
        if referrals:
            break
    else:
        raise ValueError(f"no expression found in {_SCENE_ATTEMPTS} scenes; loosen the config")
    image = _render(rng, config, objects, labels)
    masks = [_referral_mask(labels, referral) for referral in referrals.values()]
    info = {
        "expression_kinds": [referral.kind for referral in referrals.values()],
        "objects": _objects_info(objects, labels),
    }
    return image, list(referrals), masks, info


def _scene_rows(indices: list[int], seed: int, num_expressions: int, config: SyntheticConfig | None):
    for index in indices:
        image, expressions, masks, info = generate_referring_scene(seed, index, num_expressions, config)
        mask_images = [Image.fromarray(mask.astype(np.uint8) * 255) for mask in masks]
        yield {
            "image": image,
            "expressions": expressions,
            "masks": mask_images,
            "expression_kinds": info["expression_kinds"],
        }


def make_synthetic_scene_dataset(
    num_samples: int,
    seed: int,
    num_expressions: int,
    config: SyntheticConfig | None = None,
    num_proc: int | None = None,
) -> "datasets.Dataset":
    """Scenes 0..num_samples-1 of `seed` (`generate_referring_scene`) as a `datasets.Dataset` with columns `image`,
    `expressions` (list of strings), `masks` (list of mode "L" images, one per expression) and `expression_kinds`.

    `num_proc` processes draw the scenes in parallel; the rows and their order do not depend on it."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "image": ImageFeature(mode="RGB"),
            "expressions": Sequence(Value("string")),
            "masks": Sequence(ImageFeature(mode="L")),
            "expression_kinds": Sequence(Value("string")),
        }
    )
    # `datasets` caches the result; keying it by this file's source as well means an edited generator is never
    # answered from a stale cache. Each process gets a contiguous slice of the `indices` list.
    fingerprint = hashlib.sha256(Path(__file__).read_bytes())
    fingerprint.update(repr((num_samples, seed, num_expressions, config)).encode())
    return Dataset.from_generator(
        _scene_rows,
        features=features,
        gen_kwargs={
            "indices": list(range(num_samples)),
            "seed": seed,
            "num_expressions": num_expressions,
            "config": config,
        },
        num_proc=num_proc if num_proc and num_proc > 1 and num_samples > 1 else None,
        fingerprint=fingerprint.hexdigest(),
    )


def object_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    """Bool `(height, width)` mask of every object of a synthetic image: what a text-blind segmenter would answer.

    The background is grey (R = G = B) no brighter than its top level plus the texture amplitude; every palette colour
    is either saturated or brighter than that, so this is exact."""
    pixels = np.asarray(image).astype(np.int16)
    grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])
    return ~(grey & (pixels[..., 0] <= _BACKGROUND_LEVELS[1] + _TEXTURE_AMPLITUDE))


def synthetic_dataset_features() -> "datasets.Features":
    """Column schema of `make_synthetic_referring_dataset`."""
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    return Features(
        {
            "sample_id": Value("int64"),
            "image": ImageFeature(mode="RGB"),
            "expression": Value("string"),
            "mask": ImageFeature(mode="L"),
            "no_target": Value("bool"),
            "multi_target": Value("bool"),
            "expression_kind": Value("string"),
            "target_shape": Value("string"),
            "target_color": Value("string"),
            "target_size_class": Value("string"),
        }
    )


_INFO_COLUMNS = ("no_target", "multi_target", "expression_kind", "target_shape", "target_color", "target_size_class")


def _dataset_row(seed: int, index: int, config: SyntheticConfig) -> dict:
    image, expression, mask, info = generate_referring_sample(seed, index, config)
    row = {"sample_id": index, "image": image, "expression": expression}
    row["mask"] = Image.fromarray(mask.astype(np.uint8) * 255)
    return row | {name: info[name] for name in _INFO_COLUMNS}


class SyntheticReferringRows(collections.abc.Sequence):
    """Samples 0..num_samples-1 of `seed` as plain rows, each drawn when it is read: the rows of
    `make_synthetic_referring_dataset` (same columns, `image` and `mask` as PIL images) without `datasets`."""

    def __init__(self, num_samples: int, seed: int, config: SyntheticConfig | None = None):
        if num_samples < 0:
            raise ValueError(f"num_samples must not be negative, got {num_samples}")
        self.num_samples = num_samples
        self.seed = seed
        self.config = config or SyntheticConfig()

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        index = operator.index(index)
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"sample {index} of {self.num_samples}")
        return _dataset_row(self.seed, index % self.num_samples, self.config)


def make_synthetic_referring_dataset(
    num_samples: int, seed: int, config: SyntheticConfig | None = None
) -> "datasets.Dataset":
    """Samples 0..num_samples-1 of `seed` as an in-memory `datasets.Dataset` (PNG-encoded, nothing cached on disk).

    Columns (see `synthetic_dataset_features`):

    * `sample_id` (int64): the sample index; row i equals `generate_referring_sample(seed, i, config)`.
    * `image` (Image, decodes to PIL RGB).
    * `expression` (string): the referring expression (grammar in the module docstring).
    * `mask` (Image, decodes to PIL mode "L" with values 0/255; `np.asarray(row["mask"]) > 0` is the binary mask).
    * `no_target` (bool): the expression matches nothing and the mask is empty.
    * `multi_target` (bool): an `all ...` expression whose mask is the union of its objects.
    * `expression_kind` (string): "attribute", "size", "position", "multi" or "no_target".
    * `target_shape`, `target_color` (string): of the target, of the absent description for no-target rows, or
      "mixed" when multi-target objects differ.
    * `target_size_class` (string): "thin" (bars), "small", "regular"; "mixed" or "none" as above.
    """
    from datasets import Dataset

    config = config or SyntheticConfig()
    features = synthetic_dataset_features()
    rows = [features.encode_example(_dataset_row(seed, index, config)) for index in range(num_samples)]
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)
