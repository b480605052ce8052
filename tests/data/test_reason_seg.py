"""ReasonSeg loader on hand-made LabelMe-style files: polygon masks with ignored holes, prompt families, encodings."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from transformers_self1e.modeling.prompts_self1e import LONG_QUESTION_TEMPLATES, SHORT_QUESTION_TEMPLATES

from transformers_self1e.data import decode_rle, load_reason_seg, reason_seg_mask

HEIGHT, WIDTH = 12, 16
SHAPES = [
    # A target rectangle with corners (2, 1) and (9, 6): LISA paints the outline too, so columns 2..9, rows 1..6.
    {"label": "target", "points": [[2, 1], [9, 1], [9, 6], [2, 6]], "shape_type": "polygon"},
    # A smaller ignored rectangle inside it, painted later (smaller area): columns 4..5, rows 2..3 are not target.
    {"label": "ignore", "points": [[4.7, 2.2], [5, 2], [5, 3], [4, 3]], "shape_type": "polygon"},
    # A second target elsewhere, and a deprecated flag that is skipped.
    {"label": "target", "points": [[12, 8], [14, 8], [14, 10], [12, 10]], "shape_type": "polygon"},
    {"label": "flag", "points": [[0, 0], [15, 0], [15, 11], [0, 11]], "shape_type": "polygon"},
]


def expected_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[1:7, 2:10] = True
    mask[2:4, 4:6] = False
    mask[8:11, 12:15] = True
    return mask


def write_sample(directory, name: str, texts: list[str], is_sentence: bool, encoding: str = "utf-8") -> None:
    PIL.Image.new("RGB", (WIDTH, HEIGHT)).save(directory / f"{name}.jpg")
    annotation = {"text": texts, "is_sentence": is_sentence, "shapes": SHAPES}
    (directory / f"{name}.json").write_bytes(json.dumps(annotation, ensure_ascii=False).encode(encoding))


def test_mask_follows_lisa_painting_order():
    mask = reason_seg_mask(SHAPES, HEIGHT, WIDTH)
    np.testing.assert_array_equal(mask, expected_mask())
    assert mask.sum() == 8 * 6 - 4 + 9


def test_rows_prompts_and_query_draws(tmp_path):
    write_sample(tmp_path, "sentence", ["What could I sit on?", "Where would a cat sleep?", "Q3?", "Q4?"], True)
    write_sample(tmp_path, "phrase", ["the café sofa"], False, encoding="cp1252")
    dataset = load_reason_seg(tmp_path, queries_per_image=3, seed=0)
    rows = {}
    for row in dataset:
        rows.setdefault(Path(row["image"].filename).name, []).append(row)
    assert len(rows["sentence.jpg"]) == 3 and len(rows["phrase.jpg"]) == 1
    for row in dataset:
        np.testing.assert_array_equal(decode_rle(row["masks"][0]), expected_mask())
        assert row["task"] == "reasoning" and row["source"] == "reason_seg" and row["no_target"] is False
    for row in rows["sentence.jpg"]:
        question = row["conversation"][0]["content"][1]["text"]
        instruction = row["expressions"][0]
        assert question in {template.format(instruction=instruction) for template in LONG_QUESTION_TEMPLATES}
    (phrase,) = rows["phrase.jpg"]
    assert phrase["expressions"] == ["the café sofa"]
    question = phrase["conversation"][0]["content"][1]["text"]
    assert question in {template.format(text="the café sofa") for template in SHORT_QUESTION_TEMPLATES}

    assert load_reason_seg(tmp_path, seed=1).data.table.equals(load_reason_seg(tmp_path, seed=1).data.table)
    drawn = {tuple(row[0] for row in load_reason_seg(tmp_path, seed=seed)["expressions"]) for seed in range(6)}
    assert len(drawn) > 1


def test_missing_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ReasonSeg"):
        load_reason_seg(tmp_path)
    (tmp_path / "lonely.json").write_text(json.dumps({"text": ["x"], "is_sentence": False, "shapes": []}))
    with pytest.raises(FileNotFoundError, match="has no image"):
        load_reason_seg(tmp_path)
