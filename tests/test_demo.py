"""`run_demo`: a mask and an overlay per example and one contact sheet with a row per example; a bad output folder is
refused before anything is written."""

import os

import PIL.Image
import pytest
from helpers.pairs import tiny_model_and_processor

from transformers_self1e.demo import DEMO_SHEET, run_demo, write_demo_examples
from transformers_self1e.visualize import SheetRow, contact_sheet


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    return folder, write_demo_examples(folder, seed=2026, image_size=64)


def test_demo_writes_per_example_pictures_and_a_contact_sheet(examples, tmp_path):
    folder, listed = examples
    model, processor = tiny_model_and_processor()
    rows = run_demo(model, processor, tmp_path / "out", folder=folder)
    assert [row["name"] for row in rows] == [example.name for example in listed]
    written = sorted(os.listdir(tmp_path / "out"))
    per_example = [f"{example.name}-{kind}.png" for example in listed for kind in ("mask", "overlay")]
    assert written == sorted([*per_example, DEMO_SHEET])
    sheet = PIL.Image.open(tmp_path / "out" / DEMO_SHEET)
    # Same layout with blank panels: one row of four 64-px panels (image, truth, prediction, overlay) per example.
    blank = PIL.Image.new("RGB", (64, 64))
    for count in (len(listed) - 1, len(listed) + 1):
        other = contact_sheet([SheetRow("x", [("x", blank)] * 4)] * count, title="x")
        assert other.height != sheet.height
    layout = contact_sheet([SheetRow("x", [("x", blank)] * 4)] * len(listed), title="x")
    assert sheet.height == layout.height and sheet.width >= layout.width


def test_a_bad_output_folder_is_refused_before_anything_is_written(examples, tmp_path):
    folder, _ = examples
    model, processor = tiny_model_and_processor()
    (tmp_path / "a-file").write_text("keep me")
    with pytest.raises(ValueError, match="is a file"):
        run_demo(model, processor, tmp_path / "a-file", folder=folder)
    assert (tmp_path / "a-file").read_text() == "keep me"
