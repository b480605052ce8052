"""Referring segmentation loader on hand-made RefCOCO/gRefCOCO files: polygon and RLE masks, splits, targets."""

import json
import pickle
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.tokenizer import tiny_qwen2_tokenizer
from transformers_self1e.modeling.image_processing_self1e import Self1EImageProcessor
from transformers_self1e.modeling.processing_self1e import Self1EProcessor
from transformers_self1e.modeling.prompts_self1e import ANSWER_TEMPLATES, SHORT_QUESTION_TEMPLATES

from transformers_self1e.data import decode_rle, encode_rle, load_referring_segmentation, self1e_features
from transformers_self1e.training import Self1EDataCollator

# Image 1 is 20 x 30 (height x width), image 2 is 16 x 16.
WIDE_BOX = (slice(3, 8), slice(2, 12))  # polygon (2, 3)-(12, 8): COCO polygons cover their exact area
SMALL_BOX = (slice(12, 18), slice(20, 25))  # compressed RLE
TALL_BLOB = (slice(5, 11), slice(4, 6))  # uncompressed (column-major) RLE, iscrowd


def box(shape: tuple[int, int], region: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[region] = 1
    return mask


def write_instances(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # 16 * 4 + 5 zeros, then rows 5..10 of column 4, 10 zeros, rows 5..10 of column 5, and zeros to the end.
    tall_counts = [69, 6, 10, 6, 256 - 91]
    small_rle = encode_rle(box((20, 30), SMALL_BOX))
    instances = {
        "images": [
            {"id": 1, "file_name": "COCO_train2014_1.jpg", "height": 20, "width": 30},
            {"id": 2, "file_name": "COCO_train2014_2.jpg", "height": 16, "width": 16},
        ],
        "annotations": [
            {
                "id": 11,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]],
                "area": 50,
                "bbox": [2, 3, 10, 5],
                "iscrowd": 0,
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 1,
                "segmentation": {"size": [16, 16], "counts": tall_counts},
                "area": 12,
                "bbox": [4, 5, 2, 6],
                "iscrowd": 1,
            },
            {
                "id": 13,
                "image_id": 1,
                "category_id": 1,
                "segmentation": small_rle,
                "area": 30,
                "bbox": [20, 12, 5, 6],
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (directory / "instances.json").write_text(json.dumps(instances))


def write_images(image_dir: Path) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    PIL.Image.new("RGB", (30, 20), (200, 10, 10)).save(image_dir / "COCO_train2014_1.jpg")
    PIL.Image.new("RGB", (16, 16), (10, 200, 10)).save(image_dir / "COCO_train2014_2.jpg")


@pytest.fixture
def refcoco(tmp_path) -> tuple[Path, Path, Path]:
    directory = tmp_path / "refcoco"
    write_instances(directory)
    write_images(tmp_path / "train2014")
    refs = [
        {
            "ref_id": 0,
            "ann_id": 11,
            "image_id": 1,
            "split": "train",
            "category_id": 1,
            "sentences": [{"sent": "the wide box", "sent_id": 0}, {"sent": "box on the left", "sent_id": 1}],
        },
        {
            "ref_id": 1,
            "ann_id": 12,
            "image_id": 2,
            "split": "train",
            "category_id": 1,
            "sentences": [{"sent": "tall blob", "sent_id": 2}, {"sent": "   ", "sent_id": 3}],
        },
        {
            "ref_id": 2,
            "ann_id": 13,
            "image_id": 1,
            "split": "val",
            "category_id": 1,
            "sentences": [{"sent": "only in val", "sent_id": 4}],
        },
    ]
    with (directory / "refs(unc).p").open("wb") as handle:
        pickle.dump(refs, handle)
    return directory / "refs(unc).p", directory / "instances.json", tmp_path / "train2014"


@pytest.fixture
def grefcoco(tmp_path) -> tuple[Path, Path, Path]:
    directory = tmp_path / "grefcoco"
    write_instances(directory)
    write_images(tmp_path / "train2014")
    refs = [
        {"ref_id": 0, "ann_id": [11, 13], "image_id": 1, "split": "train", "category_id": [1, 1],
         "sentences": [{"sent": "both boxes", "sent_id": 0}], "no_target": False},
        {"ref_id": 1, "ann_id": [-1], "image_id": 2, "split": "train", "category_id": [],
         "sentences": [{"sent": "the giraffe", "sent_id": 1}], "no_target": True},
        {"ref_id": 2, "ann_id": [12], "image_id": 2, "split": "train", "category_id": [1],
         "sentences": [{"sent": "the blob", "sent_id": 2}], "no_target": False},
    ]  # fmt: skip
    (directory / "grefs(unc).json").write_text(json.dumps(refs))
    return directory / "grefs(unc).json", directory / "instances.json", tmp_path / "train2014"


def question_and_answer(row: dict) -> tuple[str, str]:
    user, assistant = row["conversation"]
    assert user["content"][0]["type"] == "image"
    return user["content"][1]["text"], assistant["content"][0]["text"]


def test_refcoco_rows_decode_polygons_and_rle(refcoco):
    refs_file, instances_file, image_dir = refcoco
    dataset = load_referring_segmentation(refs_file, instances_file, image_dir, expressions_per_image=None)
    assert dataset.features == self1e_features()
    rows = {row["expressions"][0]: row for row in dataset}
    # The val ref and the blank sentence are left out.
    assert sorted(rows) == ["box on the left", "tall blob", "the wide box"]
    for expression, region, shape in (
        ("the wide box", WIDE_BOX, (20, 30)),
        ("box on the left", WIDE_BOX, (20, 30)),
        ("tall blob", TALL_BLOB, (16, 16)),
    ):
        row = rows[expression]
        (mask,) = row["masks"]
        assert mask["size"] == list(shape)
        np.testing.assert_array_equal(decode_rle(mask), box(shape, region))
        assert row["task"] == "referring" and row["source"] == "refcoco" and row["no_target"] is False
        assert row["image"].size == shape[::-1]
        question, answer = question_and_answer(row)
        assert question in {template.format(text=expression) for template in SHORT_QUESTION_TEMPLATES}
        assert answer in ANSWER_TEMPLATES
    assert decode_rle(rows["tall blob"]["masks"][0]).sum() == 12
    assert decode_rle(rows["the wide box"]["masks"][0]).sum() == 50
    assert len(load_referring_segmentation(refs_file, instances_file, image_dir, split="testB")) == 0


def test_expressions_per_image_are_drawn_by_seed(refcoco):
    refs_file, instances_file, image_dir = refcoco

    def expressions(seed: int) -> list[str]:
        dataset = load_referring_segmentation(refs_file, instances_file, image_dir, expressions_per_image=1, seed=seed)
        return [row[0] for row in dataset["expressions"]]

    assert len(expressions(0)) == 2  # one row per image
    assert expressions(3) == expressions(3)
    drawn_for_first_image = {expressions(seed)[0] for seed in range(12)}
    assert drawn_for_first_image == {"the wide box", "box on the left"}
    first = load_referring_segmentation(refs_file, instances_file, image_dir, seed=5)
    second = load_referring_segmentation(refs_file, instances_file, image_dir, seed=5)
    assert first.data.table.equals(second.data.table)


def test_grefcoco_multi_target_union_and_no_target(grefcoco):
    refs_file, instances_file, image_dir = grefcoco
    dataset = load_referring_segmentation(refs_file, instances_file, image_dir, expressions_per_image=None)
    rows = {row["expressions"][0]: row for row in dataset}
    assert {name: row["source"] for name, row in rows.items()} == dict.fromkeys(rows, "grefcoco")

    union = decode_rle(rows["both boxes"]["masks"][0])
    np.testing.assert_array_equal(union, box((20, 30), WIDE_BOX) | box((20, 30), SMALL_BOX))
    assert union.sum() == 50 + 30 and rows["both boxes"]["no_target"] is False

    no_target = rows["the giraffe"]
    assert no_target["no_target"] is True and len(no_target["masks"]) == 1
    assert decode_rle(no_target["masks"][0]).shape == (16, 16) and decode_rle(no_target["masks"][0]).sum() == 0
    np.testing.assert_array_equal(decode_rle(rows["the blob"]["masks"][0]), box((16, 16), TALL_BLOB))

    # A no-target row still asks for one [SEG], with an all-zero ground truth.
    processor = Self1EProcessor(Self1EImageProcessor(size=112), tiny_qwen2_tokenizer(), image_seq_length=16)
    batch = Self1EDataCollator(processor)([no_target, rows["both boxes"]])
    assert (batch["input_ids"] == processor.seg_token_id).sum(-1).tolist() == [1, 1]
    assert tuple(batch["gt_masks"][0].shape) == (1, 16, 16) and batch["gt_masks"][0].sum() == 0
    torch.testing.assert_close(batch["gt_masks"][1][0], torch.from_numpy(union).float())
