"""`self1e segment`: the same masks as `segment()`, written as PNGs, with an overlay, a colour label map for classes,
per-class masks when asked, an IoU, and bad output paths refused before anything is written."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.cli import main
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL
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
