"""Output files: bad paths are refused up front, images are written whole or not at all, names are made safe."""

import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from transformers_self1e.output_files import check_output_files, check_output_folder, safe_file_name, save_image


def test_good_paths_pass_even_in_folders_still_to_be_made(tmp_path):
    check_output_files([tmp_path / "a.png", tmp_path / "new" / "deeper" / "b.png"], inputs=[tmp_path / "image.png"])
    check_output_folder(tmp_path / "new" / "folder")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("folder.png", "is a folder"),
        ("image.png", "would overwrite"),
        ("a-file/x.png", "is a file"),
        ("mask.jpg", "must be a .png file"),
    ],
)
def test_bad_output_files_are_refused(tmp_path, name, message):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    PIL.Image.new("RGB", (4, 4)).save(tmp_path / "image.png")
    with pytest.raises(ValueError, match=message):
        check_output_files([tmp_path / name], inputs=[tmp_path / "image.png"])


def test_two_outputs_may_not_share_a_path(tmp_path):
    with pytest.raises(ValueError, match="another output"):
        check_output_files([tmp_path / "a.png", tmp_path / "sub" / ".." / "a.png"])


def test_an_output_folder_may_not_be_a_file(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_output_folder(tmp_path / "a-file")
    with pytest.raises(ValueError, match="is a file"):
        check_output_folder(tmp_path / "a-file" / "below")


def test_save_image_writes_the_whole_image_and_nothing_else(tmp_path):
    pixels = np.random.RandomState(0).randint(0, 256, (8, 9, 3), dtype=np.uint8)
    path = save_image(PIL.Image.fromarray(pixels), tmp_path / "new" / "picture.png")
    assert np.array_equal(np.asarray(PIL.Image.open(path)), pixels)
    assert os.listdir(tmp_path / "new") == ["picture.png"]


def test_a_failed_save_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / "picture.png"
    PIL.Image.new("L", (3, 3), 7).save(path)
    broken = PIL.Image.new("RGB", (3, 3))

    def write_half_then_fail(target, **kwargs):
        Path(target).write_bytes(b"half a PNG")
        raise OSError("disk full")

    broken.save = write_half_then_fail
    with pytest.raises(OSError, match="disk full"):
        save_image(broken, path)
    assert os.listdir(tmp_path) == ["picture.png"]
    assert np.asarray(PIL.Image.open(path)).max() == 7


def test_safe_file_names():
    assert safe_file_name("The blue bar") == "the-blue-bar"
    assert safe_file_name("../../etc/passwd") == "etc-passwd"
    assert safe_file_name("a/b\\c:d*e?") == "a-b-c-d-e"
    assert safe_file_name("x" * 100) == "x" * 60
    assert safe_file_name("!!!") == ""
