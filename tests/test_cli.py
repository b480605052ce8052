"""`self1e segment`: the same masks as `segment()`, written as PNGs, with an overlay and an IoU."""

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor

from transformers_self1e.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, processor = tiny_model_and_processor()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def test_segment_writes_the_masks_of_segment(saved, tmp_path, capsys):
    folder, model, processor = saved
    image = random_image(70, 120, seed=7)
    image.save(tmp_path / "image.png")
    arguments = ["segment", str(tmp_path / "image.png"), "a dog", "the cat", "--model", str(folder)]
    assert main([*arguments, "--out", str(tmp_path / "mask.png"), "--overlay", str(tmp_path / "overlay.png")]) == 0
    expected = model.segment(image, ["a dog", "the cat"], processor=processor)
    for index in range(2):
        written = np.asarray(PIL.Image.open(tmp_path / f"mask-{index}.png")) > 0
        assert torch.equal(torch.from_numpy(written), expected.masks[index])
    assert PIL.Image.open(tmp_path / "overlay.png").size == (120, 70)
    assert "'a dog'" in capsys.readouterr().out


def test_classes_and_ground_truth_iou(saved, tmp_path, capsys):
    folder, model, processor = saved
    image = random_image(50, 50, seed=8)
    image.save(tmp_path / "image.png")
    expected = model.segment(image, classes=["sky", "road"], processor=processor)
    PIL.Image.fromarray(expected.masks[0].numpy().astype(np.uint8) * 255).save(tmp_path / "gt.png")
    arguments = ["segment", str(tmp_path / "image.png"), "--classes", "sky,road", "--model", str(folder)]
    assert main([*arguments, "--out", str(tmp_path / "m.png"), "--gt", str(tmp_path / "gt.png")]) == 0
    assert "IoU with" in capsys.readouterr().out
    assert torch.equal(torch.from_numpy(np.asarray(PIL.Image.open(tmp_path / "m-1.png")) > 0), expected.masks[1])


def test_errors_are_reported_not_raised(saved, tmp_path, capsys):
    folder, _, _ = saved
    random_image(20, 20).save(tmp_path / "image.png")
    assert main(["segment", str(tmp_path / "image.png"), "--model", str(folder)]) == 2
    assert "either prompts or --classes" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "image.png"), "a dog", "--model", str(tmp_path / "nothing")]) == 2
    assert "no model at" in capsys.readouterr().err
