"""Semantic segmentation loader on hand-made label maps: class masks, class draws, negatives, label conventions."""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from transformers_self1e.modeling.prompts_self1e import SHORT_QUESTION_TEMPLATES

from transformers_self1e.data import decode_rle, load_semantic_segmentation

CLASS_NAMES = ["wall", "floor", "cat", "dog", "sky"]


def label_map() -> np.ndarray:
    """8 x 10 labels: wall on top, floor below, a cat, and an unlabelled (255) corner; no dog, no sky."""
    labels = np.zeros((8, 10), dtype=np.uint8)
    labels[4:] = 1
    labels[2:6, 3:6] = 2
    labels[0, 0] = 255
    return labels


@pytest.fixture
def ade_like(tmp_path) -> tuple[Path, Path]:
    image_dir, label_dir = tmp_path / "images", tmp_path / "annotations"
    image_dir.mkdir()
    label_dir.mkdir()
    for name, labels in (("scene_a", label_map()), ("scene_b", np.full((6, 6), 1, dtype=np.uint8))):
        PIL.Image.fromarray(labels).save(label_dir / f"{name}.png")
        PIL.Image.new("RGB", labels.shape[::-1]).save(image_dir / f"{name}.jpg")
    return image_dir, label_dir


def rows_by_image(dataset) -> dict[str, list[dict]]:
    rows = {}
    for row in dataset:
        rows.setdefault(Path(row["image"].filename).stem, []).append(row)
    return rows


def test_each_present_class_becomes_one_row_with_its_pixels(ade_like):
    image_dir, label_dir = ade_like
    dataset = load_semantic_segmentation(image_dir, label_dir, CLASS_NAMES, source="ade20k", classes_per_image=5)
    rows = rows_by_image(dataset)
    labels = label_map()
    scene_a = {row["expressions"][0]: row for row in rows["scene_a"]}
    assert sorted(scene_a) == ["cat", "floor", "wall"]
    for class_id, name in enumerate(CLASS_NAMES[:3]):
        row = scene_a[name]
        np.testing.assert_array_equal(decode_rle(row["masks"][0]), labels == class_id)
        assert row["task"] == "semantic" and row["source"] == "ade20k" and row["no_target"] is False
        question = row["conversation"][0]["content"][1]["text"]
        assert question in {template.format(text=name) for template in SHORT_QUESTION_TEMPLATES}
    assert decode_rle(scene_a["cat"]["masks"][0]).sum() == 12
    assert decode_rle(scene_a["wall"]["masks"][0]).sum() == 4 * 10 - 1 - 6  # minus the unlabelled pixel and the cat
    assert [row["expressions"] for row in rows["scene_b"]] == [["floor"]]


def test_classes_and_negatives_are_drawn_by_seed(ade_like):
    image_dir, label_dir = ade_like

    def load(seed: int):
        return load_semantic_segmentation(
            image_dir, label_dir, CLASS_NAMES, "ade20k", classes_per_image=2, negatives_per_image=1, seed=seed
        )

    rows = rows_by_image(load(0))["scene_a"]
    assert len(rows) == 3
    positives, negative = rows[:2], rows[2]
    assert {row["expressions"][0] for row in positives} <= {"wall", "floor", "cat"}
    assert all(row["no_target"] is False for row in positives)
    assert negative["expressions"][0] in {"dog", "sky"} and negative["no_target"] is True
    assert decode_rle(negative["masks"][0]).shape == (8, 10) and decode_rle(negative["masks"][0]).sum() == 0

    assert load(4).data.table.equals(load(4).data.table)
    draws = {tuple(row[0] for row in load(seed)["expressions"][:3]) for seed in range(8)}
    assert len(draws) > 1


def test_reduce_zero_label_and_unnamed_classes(ade_like):
    image_dir, label_dir = ade_like
    # ADE20K convention: 0 is unlabelled, value v is class v - 1.
    dataset = load_semantic_segmentation(
        image_dir, label_dir, ["floor", None, "cat"], "ade20k", classes_per_image=5, reduce_zero_label=True
    )
    rows = rows_by_image(dataset)
    scene_a = {row["expressions"][0]: row for row in rows["scene_a"]}
    # Value 1 -> class 0 ("floor"), value 2 -> class 1 (unnamed: never asked), 0 and 255 -> ignored.
    assert sorted(scene_a) == ["floor"]
    np.testing.assert_array_equal(decode_rle(scene_a["floor"]["masks"][0]), label_map() == 1)


def test_missing_files_raise(tmp_path, ade_like):
    image_dir, label_dir = ade_like
    with pytest.raises(FileNotFoundError, match="no \\*.png label maps"):
        load_semantic_segmentation(image_dir, tmp_path, CLASS_NAMES, "ade20k")
    with pytest.raises(FileNotFoundError, match="has no image"):
        load_semantic_segmentation(image_dir, label_dir, CLASS_NAMES, "ade20k", image_suffix=".png")
