"""`self1e segment`: the same masks as `segment()`, written as PNGs, with an overlay, a colour label map for classes,
per-class masks when asked, an IoU, and bad output paths refused before anything is written."""

import io
import json
import os
import shutil
import struct
import sys
import zlib

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e import cli
from transformers_self1e.cli import main
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL, load_demo_examples
from transformers_self1e.visualize import LABEL_MAP_BACKGROUND, display_scale, draw_overlay, palette_color


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, processor = tiny_model_and_processor()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def read_bool(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(PIL.Image.open(path)) > 0)


def test_segment_writes_the_masks_of_segment(saved, tmp_path, capsys):
    folder, model, processor = saved
    image = random_image(70, 120, seed=7)
    image.save(tmp_path / "image.png")
    arguments = ["segment", str(tmp_path / "image.png"), "a dog", "the cat", "--model", str(folder)]
    assert main([*arguments, "--out", str(tmp_path / "mask.png"), "--overlay", str(tmp_path / "overlay.png")]) == 0
    expected = model.segment(image, ["a dog", "the cat"], processor=processor)
    for index in range(2):
        assert torch.equal(read_bool(tmp_path / f"mask-{index}.png"), expected.masks[index])
    overlay = PIL.Image.open(tmp_path / "overlay.png")
    drawn = draw_overlay(image, expected.masks, expected.prompts, expected.scores)
    assert np.array_equal(np.asarray(overlay), np.asarray(drawn))
    assert overlay.height > 70 * display_scale(image.size)  # enlarged, with the legend below
    assert "'a dog'" in capsys.readouterr().out


def test_masks_dir_holds_one_safely_named_mask_per_prompt(saved, tmp_path):
    folder, model, processor = saved
    image = random_image(40, 50, seed=3)
    image.save(tmp_path / "image.png")
    prompts = ["a dog", "the cat/../../x"]
    arguments = ["segment", str(tmp_path / "image.png"), *prompts, "--model", str(folder)]
    assert main([*arguments, "--out", str(tmp_path / "m.png"), "--masks-dir", str(tmp_path / "masks")]) == 0
    assert sorted(os.listdir(tmp_path / "masks")) == ["0-a-dog.png", "1-the-cat-x.png"]
    expected = model.segment(image, prompts, processor=processor)
    assert torch.equal(read_bool(tmp_path / "masks" / "1-the-cat-x.png"), expected.masks[1])
    assert torch.equal(read_bool(tmp_path / "m-1.png"), expected.masks[1])


@pytest.fixture(scope="module")
def shipped():
    return Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval(), Self1EProcessor.from_pretrained(SHIPPED_MODEL)


def test_classes_write_one_colour_label_map_and_masks_only_when_asked(shipped, tmp_path, capsys):
    model, processor = shipped
    image_path = DEMO_EXAMPLES / "01-position-regular.png"
    image = PIL.Image.open(image_path)
    classes = ["circle", "square", "rectangle"]
    label_map = model.segment(image, classes=classes, processor=processor).label_map.numpy()
    assert all((label_map == index).any() for index in range(-1, len(classes)))  # every colour is checked below

    arguments = ["segment", str(image_path), "--classes", ",".join(classes)]
    assert main([*arguments, "--out", str(tmp_path / "classes.png")]) == 0
    assert os.listdir(tmp_path) == ["classes.png"]
    picture = np.asarray(PIL.Image.open(tmp_path / "classes.png").convert("RGB"))
    scale = display_scale(image.size)
    # One pixel of each enlarged block of the map at the top left, the legend below it.
    sampled = picture[: image.height * scale : scale, : image.width * scale : scale]
    assert sampled.shape[:2] == label_map.shape and picture.shape[0] > image.height * scale
    for index in range(len(classes)):
        assert (sampled[label_map == index] == palette_color(index)).all()
    assert (sampled[label_map == -1] == LABEL_MAP_BACKGROUND).all()

    assert main([*arguments, "--out", str(tmp_path / "again.png"), "--masks-dir", str(tmp_path / "masks")]) == 0
    assert sorted(os.listdir(tmp_path / "masks")) == ["0-circle.png", "1-square.png", "2-rectangle.png"]
    assert np.array_equal(read_bool(tmp_path / "masks" / "2-rectangle.png").numpy(), label_map == 2)
    assert "label map ->" in capsys.readouterr().out


def test_ground_truth_iou(saved, tmp_path, capsys):
    folder, model, processor = saved
    image = random_image(50, 50, seed=8)
    image.save(tmp_path / "image.png")
    expected = model.segment(image, classes=["sky", "road"], processor=processor)
    PIL.Image.fromarray(expected.masks[0].numpy().astype(np.uint8) * 255).save(tmp_path / "gt.png")
    arguments = ["segment", str(tmp_path / "image.png"), "--classes", "sky,road", "--model", str(folder)]
    assert main([*arguments, "--out", str(tmp_path / "m.png"), "--gt", str(tmp_path / "gt.png")]) == 0
    assert "IoU with" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--overlay", "{tmp}/a-folder"], "is a folder"),
        (["--overlay", "{tmp}/a-file/overlay.png"], "is a file"),
        (["--overlay", "{tmp}/overlay.jpg"], "must be a .png file"),
        (["--overlay", "{tmp}/mask.png"], "another output"),
        (["--out", "{tmp}/image.png"], "would overwrite"),
        (["--gt", "{tmp}/missing.png"], "no image at"),
        (["--masks-dir", "{tmp}/a-file"], "is a file"),
    ],
)
def test_bad_paths_are_refused_before_anything_is_written(saved, tmp_path, capsys, options, message):
    folder, _, _ = saved
    random_image(20, 20).save(tmp_path / "image.png")
    image_bytes = (tmp_path / "image.png").read_bytes()
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    options = [option.replace("{tmp}", str(tmp_path)) for option in options]
    arguments = ["segment", str(tmp_path / "image.png"), "a dog", "--model", str(folder)]
    assert main([*arguments, "--out", str(tmp_path / "mask.png"), *options]) == 2
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["a-file", "a-folder", "image.png"]
    assert (tmp_path / "image.png").read_bytes() == image_bytes


def test_errors_are_reported_not_raised(saved, tmp_path, capsys):
    folder, _, _ = saved
    random_image(20, 20).save(tmp_path / "image.png")
    assert main(["segment", str(tmp_path / "image.png"), "--model", str(folder)]) == 2
    assert "either prompts or --classes" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "image.png"), "a dog", "--model", str(tmp_path / "nothing")]) == 2
    assert "no model folder at" in capsys.readouterr().err
    (tmp_path / "not-an-image.png").write_text("hello")
    assert main(["segment", str(tmp_path / "not-an-image.png"), "a dog", "--model", str(folder)]) == 2
    assert "not an image" in capsys.readouterr().err


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` pixels, with almost no pixel data: opening it costs nothing, so
    only a check of the declared size stops a decoder from allocating the whole image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def write_unreadable_image(kind: str, path) -> None:
    """An image file that cannot be segmented, of the given kind."""
    if kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("hello")
    elif kind in ("truncated png", "truncated jpeg"):
        buffer = io.BytesIO()
        random_image(60, 60, seed=1).save(buffer, format="PNG" if kind == "truncated png" else "JPEG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "decompression bomb":
        path.write_bytes(png_header_only(20_000, 20_000))  # beyond PIL's own limit
    elif kind == "too many pixels":
        path.write_bytes(png_header_only(8_000, 8_000))  # below PIL's limit, above the image processor's
    else:
        raise AssertionError(kind)


UNREADABLE_IMAGES = {
    "folder": "is a folder, not an image file",
    "text": "is not an image file PIL can read",
    "truncated png": "cannot be decoded (a truncated or corrupt file?)",
    "truncated jpeg": "cannot be decoded (a truncated or corrupt file?)",
    "decompression bomb": "is too large to decode safely",
    "too many pixels": "is 8000x8000 = 64000000 pixels, more than the 50000000",
}


def only_error_line(captured) -> str:
    """The one line the command wrote to stderr, which must be an `error:` line."""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.mark.parametrize("kind", sorted(UNREADABLE_IMAGES))
@pytest.mark.parametrize("role", ["image", "gt"])
def test_unreadable_images_are_one_line_naming_the_file(saved, tmp_path, capsys, kind, role):
    folder, _, _ = saved
    bad = tmp_path / "bad.png"
    write_unreadable_image(kind, bad)
    random_image(60, 60).save(tmp_path / "image.png")
    image, gt = (bad, []) if role == "image" else (tmp_path / "image.png", ["--gt", str(bad)])
    arguments = ["segment", str(image), "a dog", "--model", str(folder), "--out", str(tmp_path / "out" / "mask.png")]
    assert main([*arguments, *gt]) == 2
    line = only_error_line(capsys.readouterr())
    assert str(bad) in line and UNREADABLE_IMAGES[kind] in line
    assert not (tmp_path / "out").exists()


def test_demo_refuses_a_bad_examples_folder_before_writing(saved, tmp_path, capsys):
    folder, _, _ = saved
    examples = tmp_path / "examples"
    shutil.copytree(DEMO_EXAMPLES, examples)
    listing = load_demo_examples(examples)
    arguments = ["demo", "--model", str(folder), "--examples", str(examples), "--out", str(tmp_path / "demo")]

    # The last example's image is truncated: nothing of the earlier ones may be written either.
    write_unreadable_image("truncated png", (examples / listing[-1].image).with_suffix(".tmp"))
    os.replace((examples / listing[-1].image).with_suffix(".tmp"), examples / listing[-1].image)
    assert main(arguments) == 2
    line = only_error_line(capsys.readouterr())
    assert str(examples / listing[-1].image) in line and "truncated or corrupt" in line
    assert not (tmp_path / "demo").exists() or not os.listdir(tmp_path / "demo")

    for listing_text, message in [
        ("not json", "examples.json is not valid JSON"),
        ("[]", "must hold a non-empty JSON list of examples"),
        ('[{"name": "a"}]', "example 0 of"),
    ]:
        (examples / "examples.json").write_text(listing_text)
        assert main(arguments) == 2
        assert message in only_error_line(capsys.readouterr())
    assert not (tmp_path / "demo").exists() or not os.listdir(tmp_path / "demo")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--device", "bogus", "'bogus' is not a torch device"),
        ("--device", "cuda", "'cuda': this torch build or machine has no cuda device"),
        ("--device", "meta", "'meta' is not a device to run on"),
        ("--threshold", "1", "must lie strictly between 0 and 1"),
        ("--threshold", "0", "must lie strictly between 0 and 1"),
        ("--threshold", "nan", "must lie strictly between 0 and 1"),
        ("--threshold", "half", "expected a number between 0 and 1"),
        ("--max-tiles", "0", "must be at least 1"),
        ("--max-tiles", "two", "expected an integer of at least 1"),
    ],
)
def test_bad_options_are_usage_errors_naming_the_option(saved, tmp_path, capsys, monkeypatch, option, value, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU build, whatever this machine has
    folder, _, _ = saved
    random_image(20, 20).save(tmp_path / "image.png")
    for command in (["segment", str(tmp_path / "image.png"), "a dog"], ["evaluate", "--dataset", "synthetic[:1]"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--model", str(folder), "--out", str(tmp_path / "out.png"), f"{option}={value}"])
        assert exit_info.value.code == 2
        assert f"error: argument {option}: {message}" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["image.png"]


def test_a_device_index_beyond_the_devices_is_refused(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit):
        main(["demo", "--device", "cuda:1"])
    assert "error: argument --device: 'cuda:1': there is no cuda device 1, only 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset", "synthetic[:0]"], "asks for no rows: N in NAME[:N] must be at least 1"),
        (["--dataset", "synthetic[1:5]"], "is not NAME or NAME[:N]"),
        (["--dataset", "synthetic[:-1]"], "is not NAME or NAME[:N]"),
        (["--dataset", "synthetic[:]"], "is not NAME or NAME[:N]"),
        (["--dataset", "[:5]"], "is not NAME or NAME[:N]"),
        (["--dataset", "synthetic[:2]", "--image-size", "0"], "argument --image-size: must be at least 1"),
        (["--dataset", "synthetic[:2]", "--image-size", "100000"], "more than the 50000000 pixels"),
        (["--dataset", "synthetic[:2]", "--seed", "-1"], "argument --seed: must be at least 0"),
    ],
)
def test_evaluate_refuses_bad_datasets_and_sizes(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *arguments, "--out", str(tmp_path / "report.json")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_evaluate_reads_exactly_the_rows_asked_for(saved, tmp_path):
    folder, _, _ = saved
    arguments = ["evaluate", "--dataset", "synthetic[:3]", "--model", str(folder), "--image-size", "64"]
    assert main([*arguments, "--out", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["metrics"]["num_samples"] == 3
    assert os.listdir(tmp_path) == ["report.json"]


def test_evaluate_refuses_a_folder_as_report_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the report path was checked")

    monkeypatch.setattr(cli, "load_model_and_processor", no_loading)
    (tmp_path / "report").mkdir()
    assert main(["evaluate", "--dataset", "synthetic[:2]", "--out", str(tmp_path / "report")]) == 2
    assert "is a folder" in only_error_line(capsys.readouterr())


def test_predict_without_the_data_extra_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as an install without the extra
    assert main(["predict", "--dataset", "synthetic[:2]", "--out", str(tmp_path / "predictions")]) == 2
    error = only_error_line(capsys.readouterr())
    assert error == (
        "error: self1e predict --dataset synthetic[:2] needs the 'data' extra (pyarrow is not installed): "
        "pip install 'transformers-self1e[data]'"
    )
    assert os.listdir(tmp_path) == []


def test_a_launch_of_several_processes_without_accelerate_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    assert main(["evaluate", "--dataset", "synthetic[:2]", "--out", str(tmp_path / "report.json")]) == 2
    assert "needs the 'train' extra (accelerate is not installed)" in only_error_line(capsys.readouterr())
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("option", ["--batch-size", "--shard-size"])
def test_batch_and_shard_sizes_must_be_positive(tmp_path, capsys, command, option):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--dataset", "synthetic[:2]", "--out", str(tmp_path / "out"), option, "0"])
    assert exit_info.value.code == 2 and f"argument {option}: must be at least 1" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
