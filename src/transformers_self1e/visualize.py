"""Pictures of segmentation results for people: masks outlined over their image with a legend, colour label maps and
contact sheets.

Small images are enlarged first (nearest neighbour, by a whole factor) so that thin masks, outlines and legend text
stay legible. Every mask gets its own palette colour, drawn as a solid outline just outside the mask and a thin black or
white halo around it, whichever contrasts with the outline, so that it reads on any background. The pixels inside a
mask keep their colour by default: a tinted fill recolours the object (orange under cyan looks olive), and the prompts
this model reads often name colours. Legends sit below the image, never over it.
"""

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import PIL.Image
import torch
from PIL import ImageDraw, ImageFilter, ImageFont

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

# Saturated colours that stay apart from each other, ordered so that consecutive ones differ most. The first ones are
# bright, which shows best on the dark backgrounds of the synthetic images; the halo separates them from light ones.
PALETTE: tuple[RGB, ...] = (
    (0, 220, 255),
    (255, 40, 200),
    (255, 200, 0),
    (60, 220, 60),
    (255, 90, 30),
    (120, 120, 255),
    (170, 255, 200),
    (200, 120, 255),
    (255, 160, 160),
    (0, 150, 140),
    (180, 180, 0),
    (150, 80, 30),
)
LABEL_MAP_BACKGROUND: RGB = (0, 0, 0)
DISPLAY_SIZE = 256  # small images are enlarged until their longer side is about this many pixels
PANEL_BACKGROUND: RGB = (250, 250, 250)
TEXT_COLOR: RGB = (20, 20, 20)
MUTED_TEXT_COLOR: RGB = (110, 110, 110)
MAX_LEGEND_WIDTH = 640  # legend lines longer than this (or than the picture's width) end in an ellipsis
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


@dataclass(frozen=True)
class SheetRow:
    """One row of a contact sheet: a caption line above titled panels (shown left to right)."""

    caption: str
    panels: Sequence[tuple[str, PIL.Image.Image]]


def palette_color(index: int) -> RGB:
    """The colour of mask or class `index`: `PALETTE` in order, then hues spread by the golden ratio."""
    if index < 0:
        raise ValueError(f"a palette index must be non-negative, got {index}")
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index - len(PALETTE)) * _GOLDEN_RATIO_CONJUGATE % 1.0
    value = 1.0 if index % 2 else 0.75
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.8, value)
    return round(255 * red), round(255 * green), round(255 * blue)


def display_scale(size: tuple[int, int], target: int = DISPLAY_SIZE) -> int:
    """The whole enlargement factor that brings the longer side of `size` (width, height) up to about `target`."""
    return max(1, target // max(size))


def enlarge(image: PIL.Image.Image, scale: int) -> PIL.Image.Image:
    """`image` `scale` times larger, every pixel a `scale` x `scale` block (nearest neighbour)."""
    if scale == 1:
        return image.copy()
    return image.resize((image.width * scale, image.height * scale), PIL.Image.Resampling.NEAREST)


def draw_overlay(
    image: PIL.Image.Image,
    masks: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    scores: torch.Tensor | Sequence[float] | None = None,
    *,
    legend: bool = True,
    scale: int | None = None,
    fill_alpha: float = 0.0,
) -> PIL.Image.Image:
    """The image (enlarged when small) with each mask outlined in its own colour, and a legend below.

    Args:
        image: the segmented image.
        masks: `(num_masks, height, width)` booleans at the image's size.
        labels: the prompt or class name of each mask, shown in the legend.
        scores: the score of each mask, shown in the legend when given.
        legend: draw the legend (colour, label, score or "no target" for an empty mask) below the image.
        scale: enlargement factor; by default `display_scale(image.size)`.
        fill_alpha: opacity of a fill of each mask in its colour (0, the default, leaves the pixels as they are).

    Returns:
        An RGB image: the enlarged image at the top left (`scale` times the image's size), the legend below it.
    """
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    masks = _as_masks(masks, image.size)
    labels = list(labels)
    if len(labels) != len(masks):
        raise ValueError(f"got {len(labels)} labels for {len(masks)} masks")
    if scores is not None:
        scores = [float(score) for score in scores]
        if len(scores) != len(masks):
            raise ValueError(f"got {len(scores)} scores for {len(masks)} masks")
    if not 0.0 <= fill_alpha <= 1.0:
        raise ValueError(f"fill_alpha must be between 0 and 1, got {fill_alpha}")
    scale = display_scale(image.size) if scale is None else _check_scale(scale)
    canvas = np.asarray(enlarge(image.convert("RGB"), scale), dtype=np.float32).copy()
    enlarged = [mask.repeat(scale, axis=0).repeat(scale, axis=1) for mask in masks]
    colors = [np.array(palette_color(index), dtype=np.float32) for index in range(len(masks))]
    for mask, color in zip(enlarged, colors):
        canvas[mask] = (1 - fill_alpha) * canvas[mask] + fill_alpha * color
    # Outlines go on top of every fill, so a later mask's fill never tints an earlier mask's outline.
    outline_width = _outline_width(canvas.shape[:2])
    for mask, color in zip(enlarged, colors):
        outline = _dilate(mask, outline_width)
        canvas[_dilate(mask, outline_width + 1) & ~outline] = _halo_color(color)
        canvas[outline & ~mask] = color
    picture = PIL.Image.fromarray(canvas.round().astype(np.uint8))
    if not legend:
        return picture
    entries = []
    for index, (label, mask) in enumerate(zip(labels, masks)):
        found = bool(mask.any())
        note = "no target" if not found else "" if scores is None else f"score {scores[index]:.2f}"
        entries.append((palette_color(index), f'"{label}"', note, found))
    return _with_legend(picture, entries)


def draw_label_map(
    label_map: torch.Tensor | np.ndarray, class_names: Sequence[str], *, scale: int | None = None
) -> PIL.Image.Image:
    """A colour picture of a semantic label map with a legend below it.

    Args:
        label_map: `(height, width)` integers, the index of each pixel's class in `class_names`, -1 for background.
        class_names: the name of each class.
        scale: enlargement factor; by default `display_scale` of the map's size.

    Returns:
        An RGB image: the map at the top left (`scale` times its size), each class's pixels in `palette_color` of its
        index and background pixels in `LABEL_MAP_BACKGROUND`; below it the legend, one line per class (a class
        without pixels marked "no target") and one for the background.
    """
    label_map = _to_numpy(label_map)
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"a label map must be (height, width) integers, got {label_map.dtype} {label_map.shape}")
    class_names = list(class_names)
    if label_map.size and (label_map.min() < -1 or label_map.max() >= len(class_names)):
        raise ValueError(
            f"label map values must be -1 (background) or class indices below {len(class_names)}, "
            f"got {label_map.min()}..{label_map.max()}"
        )
    scale = display_scale(label_map.shape[::-1]) if scale is None else _check_scale(scale)
    # Row k of the lookup table is class k - 1, row 0 the background.
    colors = np.array([LABEL_MAP_BACKGROUND] + [palette_color(index) for index in range(len(class_names))], np.uint8)
    picture = enlarge(PIL.Image.fromarray(colors[label_map + 1]), scale)
    present = set(np.unique(label_map).tolist())
    entries = [
        (palette_color(index), name, "" if index in present else "no target", index in present)
        for index, name in enumerate(class_names)
    ]
    entries.append((LABEL_MAP_BACKGROUND, "background", "", True))
    return _with_legend(picture, entries)


def contact_sheet(
    rows: Sequence[SheetRow], title: str | None = None, panel_size: int = DISPLAY_SIZE
) -> PIL.Image.Image:
    """Rows of titled panels under a caption each, on one image that shows a whole run at a glance.

    Every panel is enlarged by `display_scale(panel.size, panel_size)` and the panels of one column are left-aligned,
    so that rows of same-sized panels line up as a grid. An optional `title` heads the sheet.
    """
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    if any(not row.panels for row in rows):
        raise ValueError("every contact sheet row needs at least one panel")
    panel_rows = [[enlarge(panel, display_scale(panel.size, panel_size)) for _, panel in row.panels] for row in rows]
    columns = max(len(panels) for panels in panel_rows)
    column_widths = [
        max(panels[column].width for panels in panel_rows if column < len(panels)) for column in range(columns)
    ]
    font, title_font = _font(16), _font(20)
    line, margin, gap, row_gap = _line_height(font), 12, 10, 20
    title_height = _line_height(title_font) + gap if title else 0
    # Each row: the caption line, the panel-title line, then the panels.
    row_heights = [2 * line + max(panel.height for panel in panels) for panels in panel_rows]
    width = 2 * margin + max(
        sum(column_widths) + gap * (columns - 1),
        *(_text_width(row.caption, font) for row in rows),
        _text_width(title, title_font) if title else 0,
    )
    height = 2 * margin + title_height + sum(row_heights) + row_gap * (len(rows) - 1)
    sheet = PIL.Image.new("RGB", (width, height), PANEL_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((margin, margin), title, fill=TEXT_COLOR, font=title_font)
    top = margin + title_height
    for row, panels, row_height in zip(rows, panel_rows, row_heights):
        draw.text((margin, top), row.caption, fill=TEXT_COLOR, font=font)
        left = margin
        for (name, _), panel, column_width in zip(row.panels, panels, column_widths):
            draw.text((left, top + line), name, fill=MUTED_TEXT_COLOR, font=font)
            sheet.paste(panel.convert("RGB"), (left, top + 2 * line))
            left += column_width + gap
        top += row_height + row_gap
    return sheet


def _as_masks(masks: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`masks` as a `(num_masks, height, width)` bool array, checked against the image `size` (width, height)."""
    array = _to_numpy(masks)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (size[1], size[0]):
        raise ValueError(
            f"masks must be (num_masks, {size[1]}, {size[0]}) for a {size[0]}x{size[1]} image, got {array.shape}"
        )
    if array.dtype != bool:
        raise TypeError(f"masks must be booleans, got {array.dtype}")
    return array


def _to_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _check_scale(scale: int) -> int:
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive whole number, got {scale!r}")
    return scale


def _outline_width(shape: tuple[int, int]) -> int:
    return max(2, max(shape) // 200)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` grown by `radius` pixels (a square neighbourhood), computed only around the mask's bounding box."""
    grown = np.zeros_like(mask)
    rows, columns = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return grown
    top, bottom = max(rows[0] - radius, 0), min(rows[-1] + radius + 1, mask.shape[0])
    left, right = max(columns[0] - radius, 0), min(columns[-1] + radius + 1, mask.shape[1])
    crop = PIL.Image.fromarray(mask[top:bottom, left:right].astype(np.uint8) * 255)
    grown[top:bottom, left:right] = np.asarray(crop.filter(ImageFilter.MaxFilter(2 * radius + 1))) > 0
    return grown


def _halo_color(color: np.ndarray) -> tuple[int, int, int]:
    """Black around light outline colours, white around dark ones."""
    luminance = float(np.dot(color, (0.299, 0.587, 0.114))) / 255
    return (0, 0, 0) if luminance > 0.45 else (255, 255, 255)


@lru_cache(maxsize=8)
def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _line_height(font: Font) -> int:
    return round(1.5 * font.getbbox("Ag")[3])


def _text_width(text: str, font: Font) -> int:
    return int(np.ceil(font.getlength(text)))


def _shorten(text: str, font: Font, width: int) -> str:
    """`text`, cut and ended with an ellipsis if it is wider than `width`."""
    if _text_width(text, font) <= width:
        return text
    while text and _text_width(text + "...", font) > width:
        text = text[:-1]
    return text + "..."


def _with_legend(picture: PIL.Image.Image, entries: list[tuple[RGB, str, str, bool]]) -> PIL.Image.Image:
    """`picture` with a legend below it, one line per (colour, label, note, found) entry: a colour swatch (hollow when
    not found), the label and a muted note."""
    if not entries:
        return picture
    font = _font(min(22, max(14, picture.width // 24)))
    line = _line_height(font)
    swatch, margin, note_gap = line * 3 // 5, line // 2, _text_width("  ", font)
    text_left = 2 * margin + swatch
    lines = []
    for _, label, note, _ in entries:
        note_width = _text_width(note, font) + note_gap if note else 0
        label = _shorten(label, font, max(MAX_LEGEND_WIDTH, picture.width) - text_left - margin - note_width)
        lines.append((label, note, text_left + _text_width(label, font) + note_width + margin))
    width = max(picture.width, *(line_width for _, _, line_width in lines))
    canvas = PIL.Image.new("RGB", (width, picture.height + line * len(entries) + 2 * margin), PANEL_BACKGROUND)
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = picture.height + margin
    text_offset = (line - font.getbbox("Ag")[3]) // 2
    for (color, _, _, found), (label, note, _) in zip(entries, lines):
        box_top = top + (line - swatch) // 2
        box = (margin, box_top, margin + swatch, box_top + swatch)
        if found:
            draw.rectangle(box, fill=color, outline=TEXT_COLOR)
        else:
            draw.rectangle(box, outline=color, width=max(2, swatch // 6))
        draw.text((text_left, top + text_offset), label, fill=TEXT_COLOR, font=font)
        if note:
            note_left = text_left + _text_width(label, font) + note_gap
            draw.text((note_left, top + text_offset), note, fill=MUTED_TEXT_COLOR, font=font)
        top += line
    return canvas


__all__ = [
    "DISPLAY_SIZE",
    "LABEL_MAP_BACKGROUND",
    "PALETTE",
    "SheetRow",
    "contact_sheet",
    "display_scale",
    "draw_label_map",
    "draw_overlay",
    "enlarge",
    "palette_color",
]
