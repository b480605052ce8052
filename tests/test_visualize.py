"""Overlays, label maps and contact sheets: each mask outlined in its own colour, the image untouched elsewhere, legends
below the picture, label-map pixels in their class colour, one contact-sheet row per entry."""

import numpy as np
import PIL.Image
import pytest
import torch

from transformers_self1e.visualize import (
    LABEL_MAP_BACKGROUND,
    PALETTE,
    SheetRow,
    contact_sheet,
    display_scale,
    draw_label_map,
    draw_overlay,
    palette_color,
)

LEGEND_BACKGROUND = (250, 250, 250)


def noisy_image(height: int, width: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (height, width, 3), dtype=np.uint8))


def two_boxes(height: int, width: int) -> torch.Tensor:
    masks = torch.zeros(2, height, width, dtype=torch.bool)
    masks[0, 4:10, 3:12] = True
    masks[1, 20:26, 25:28] = True
    return masks


def ring_at(mask: np.ndarray, distance: int) -> np.ndarray:
    """Pixels at exactly `distance` (chessboard metric) from `mask`, by shifting; independent of the drawing code."""

    def grown(radius: int) -> np.ndarray:
        padded = np.pad(mask, radius)
        out = np.zeros_like(mask)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                out |= padded[radius + dy : radius + dy + mask.shape[0], radius + dx : radius + dx + mask.shape[1]]
        return out

    return grown(distance) & ~grown(distance - 1) if distance > 1 else grown(1) & ~mask


def enlarged(array: np.ndarray, scale: int) -> np.ndarray:
    return array.repeat(scale, axis=0).repeat(scale, axis=1)


def text_lines(legend: np.ndarray) -> list[tuple[int, int]]:
    """The (top, bottom) row ranges of `legend` that hold anything but the legend background."""
    inked = np.concatenate([[False], (legend != LEGEND_BACKGROUND).any(axis=(1, 2)), [False]])
    edges = np.flatnonzero(inked[1:] != inked[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_small_images_are_enlarged_by_a_whole_factor():
    assert display_scale((64, 64)) == 4
    assert display_scale((120, 70)) == 2
    assert display_scale((1000, 300)) == 1
    picture = draw_overlay(noisy_image(30, 40), two_boxes(30, 40), ["a", "b"], legend=False)
    assert picture.size == (40 * display_scale((40, 30)), 30 * display_scale((40, 30)))


def test_each_mask_is_outlined_in_its_own_colour_and_the_rest_is_untouched():
    image, masks = noisy_image(30, 40), two_boxes(30, 40)
    scale = display_scale(image.size)
    picture = np.asarray(draw_overlay(image, masks, ["a", "b"], legend=False))
    original = enlarged(np.asarray(image), scale)
    big_masks = [enlarged(mask.numpy(), scale) for mask in masks]
    assert palette_color(0) != palette_color(1)
    for index, mask in enumerate(big_masks):
        assert (picture[ring_at(mask, 1)] == palette_color(index)).all()
        # The object itself keeps its pixels: no tint toward the outline colour.
        assert (picture[mask] == original[mask]).all()
    near = np.zeros_like(big_masks[0])
    for mask in big_masks:
        for distance in range(1, 8):
            near |= ring_at(mask, distance)
    assert (picture[~near] == original[~near]).all()


def test_a_fill_tints_only_the_mask():
    image, masks = noisy_image(30, 40), two_boxes(30, 40)
    scale = display_scale(image.size)
    plain = np.asarray(draw_overlay(image, masks, ["a", "b"], legend=False)).astype(int)
    filled = np.asarray(draw_overlay(image, masks, ["a", "b"], legend=False, fill_alpha=1.0)).astype(int)
    inside = enlarged(masks[0].numpy(), scale)
    assert (filled[inside] == palette_color(0)).all()
    assert (filled[~enlarged(masks.any(0).numpy(), scale)] == plain[~enlarged(masks.any(0).numpy(), scale)]).all()


def test_the_legend_lies_below_the_image_one_text_line_per_mask():
    image, masks = noisy_image(30, 40), two_boxes(30, 40)
    masks = torch.cat([masks, torch.zeros(1, 30, 40, dtype=torch.bool)])
    bare = np.asarray(draw_overlay(image, masks, ["a", "b", "c"], legend=False))
    with_legend = np.asarray(draw_overlay(image, masks, ["a dog", "the cat", "a unicorn"], [0.9, 0.8, 0.0]))
    height, width = bare.shape[:2]
    assert np.array_equal(with_legend[:height, :width], bare)
    legend = with_legend[height:]
    lines = text_lines(legend)
    assert len(lines) == 3
    for index, (top, bottom) in enumerate(lines[:2]):
        # Each found mask's swatch is drawn in its colour on its own line.
        assert (legend[top:bottom] == palette_color(index)).all(axis=-1).sum() > 20
    one_entry = draw_overlay(image, masks[:1], ["a dog"], [0.9])
    assert one_entry.height < with_legend.shape[0]


def test_long_labels_widen_the_legend_up_to_a_limit():
    image, masks = noisy_image(30, 40), two_boxes(30, 40)[:1]
    short = draw_overlay(image, masks, ["dog"])
    longer = draw_overlay(image, masks, ["the dog that sits on the left of the red sofa"])
    very_long = draw_overlay(image, masks, ["a very long prompt " * 20])
    assert short.width == 40 * display_scale(image.size)
    assert longer.width > short.width
    assert very_long.width <= 640


def test_palette_colours_stay_distinct():
    colors = [palette_color(index) for index in range(60)]
    assert colors[: len(PALETTE)] == list(PALETTE)
    assert len(set(colors)) == len(colors)
    assert LABEL_MAP_BACKGROUND not in colors


def test_label_map_pixels_carry_their_class_colour():
    label_map = torch.from_numpy(np.random.RandomState(1).randint(-1, 3, (20, 30)))
    label_map[label_map == 2] = 1  # class 2 has no pixels
    picture = np.asarray(draw_label_map(label_map, ["sky", "road", "car"]))
    scale = display_scale((30, 20))
    top = picture[: 20 * scale, : 30 * scale]
    expected = np.zeros((20, 30, 3), dtype=np.uint8)
    expected[label_map.numpy() == -1] = LABEL_MAP_BACKGROUND
    expected[label_map.numpy() == 0] = palette_color(0)
    expected[label_map.numpy() == 1] = palette_color(1)
    assert np.array_equal(top, enlarged(expected, scale))
    assert picture.shape[0] > 20 * scale  # the legend below


def test_bad_inputs_are_refused():
    image = noisy_image(30, 40)
    with pytest.raises(ValueError, match="masks must be"):
        draw_overlay(image, torch.zeros(1, 40, 30, dtype=torch.bool), ["a"])
    with pytest.raises(TypeError, match="booleans"):
        draw_overlay(image, np.zeros((1, 30, 40), dtype=np.uint8), ["a"])
    with pytest.raises(ValueError, match="labels"):
        draw_overlay(image, two_boxes(30, 40), ["a"])
    with pytest.raises(ValueError, match="scores"):
        draw_overlay(image, two_boxes(30, 40), ["a", "b"], [0.5])
    with pytest.raises(TypeError, match="PIL image"):
        draw_overlay(np.asarray(image), two_boxes(30, 40), ["a", "b"])
    with pytest.raises(ValueError, match="class indices below 2"):
        draw_label_map(np.full((4, 4), 2), ["a", "b"])
    with pytest.raises(ValueError, match="at least one row"):
        contact_sheet([])


def test_contact_sheet_has_one_row_of_panels_per_entry():
    red = PIL.Image.new("RGB", (64, 64), (255, 0, 0))
    grey = PIL.Image.new("L", (64, 64), 128)

    def sheet(rows: int) -> np.ndarray:
        entries = [SheetRow(f"example {row}", [("image", red), ("mask", grey)]) for row in range(rows)]
        return np.asarray(contact_sheet(entries, title="a run"))

    one, two, three = sheet(1), sheet(2), sheet(3)
    assert three.shape[0] - two.shape[0] == two.shape[0] - one.shape[0] > 256
    assert one.shape[1] >= 2 * 256
    # Every row shows its 64-px red panel enlarged to 256 px.
    for rows, picture in zip((1, 2, 3), (one, two, three)):
        assert (picture == (255, 0, 0)).all(axis=-1).sum() == rows * 256 * 256
