"""The image-segmentation pipeline, in the package and as remote code in a process without the package."""

import json

import numpy as np
import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor
from helpers.remote_code import run_without_package
from transformers import pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, processor = tiny_model_and_processor(image_kwargs={"max_tiles": 4})
    folder = tmp_path_factory.mktemp("self1e")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def as_mask(entry: dict) -> torch.Tensor:
    return torch.from_numpy(np.asarray(entry["mask"]) > 0)


def test_saved_config_declares_the_pipeline(saved):
    folder, _, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert (
        config["custom_pipelines"]["image-segmentation"]["impl"] == "pipeline_self1e.Self1EImageSegmentationPipeline"
    )
    assert (folder / "pipeline_self1e.py").is_file()


def test_pipeline_output_equals_segment(saved):
    folder, model, processor = saved
    segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
    image = random_image(90, 170, seed=4)
    outputs = segmenter(image, prompts=["a dog", "the cat"], threshold=0.4)
    expected = model.segment(image, ["a dog", "the cat"], processor=processor, threshold=0.4)
    assert [entry["label"] for entry in outputs] == ["a dog", "the cat"]
    for entry, mask, score in zip(outputs, expected.masks, expected.scores):
        assert entry["mask"].mode == "L" and entry["mask"].size == (170, 90)
        assert torch.equal(as_mask(entry), mask)
        assert entry["score"] == pytest.approx(float(score), abs=1e-6)
    single = segmenter(image, prompt="a dog", threshold=0.4)
    assert len(single) == 1 and torch.equal(as_mask(single[0]), expected.masks[0])


def test_pipeline_semantic_classes(saved):
    folder, model, processor = saved
    segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
    image = random_image(60, 60, seed=5)
    outputs = segmenter(image, classes=["sky", "road"])
    expected = model.segment(image, classes=["sky", "road"], processor=processor)
    for entry, mask in zip(outputs, expected.masks):
        assert torch.equal(as_mask(entry), mask)


def test_pipeline_needs_a_prompt(saved):
    folder, _, _ = saved
    segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
    with pytest.raises(ValueError, match="prompt=, prompts= or classes="):
        segmenter(random_image(20, 20))


def test_a_string_given_as_prompts_is_one_prompt(saved):
    folder, model, processor = saved
    segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
    image = random_image(50, 70, seed=7)
    outputs = segmenter(image, prompts="circle")
    assert [entry["label"] for entry in outputs] == ["circle"]
    assert torch.equal(as_mask(outputs[0]), model.segment(image, "circle", processor=processor).masks[0])


@pytest.mark.parametrize("query", [{"prompts": ["a dog", "the cat"]}, {"classes": ["sky", "road"]}])
def test_batches_give_the_outputs_of_one_image_at_a_time(saved, query):
    folder, _, _ = saved
    segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
    images = [random_image(50, 70, seed=1), random_image(120, 40, seed=2), random_image(30, 30, seed=3)]
    batched = segmenter(images, batch_size=2, **query)
    assert len(batched) == len(images)
    for image, outputs in zip(images, batched):
        alone = segmenter(image, **query)
        assert [entry["label"] for entry in outputs] == [entry["label"] for entry in alone]
        for entry, expected in zip(outputs, alone):
            assert entry["mask"].size == image.size
            assert torch.equal(as_mask(entry), as_mask(expected))
            assert entry["score"] == pytest.approx(expected["score"], abs=1e-6)


def test_a_batch_runs_the_vision_tower_once(saved):
    folder, _, _ = saved
    segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
    calls = []
    hook = segmenter.model.model.vision_tower.register_forward_hook(lambda *args: calls.append(args))
    images = [random_image(50, 70, seed=1), random_image(120, 40, seed=2), random_image(30, 30, seed=3)]
    try:
        segmenter(images, prompts=["a dog", "the cat"], batch_size=2)
        assert len(calls) == 2  # a batch of two images, then one
        calls.clear()
        segmenter(images, prompts=["a dog", "the cat"])
        assert len(calls) == 3
    finally:
        hook.remove()


def test_bad_options_are_refused_before_the_model_runs(saved):
    folder, _, _ = saved
    segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
    calls = []
    hook = segmenter.model.register_forward_hook(lambda *args: calls.append(args))
    image = random_image(20, 20)
    try:
        with pytest.raises(TypeError, match=r"pipeline got unexpected keyword arguments \['colour'\]"):
            segmenter(image, prompt="a dog", colour="red")
        with pytest.raises(TypeError, match=r"threshold must be a number .* got str '0.5'"):
            segmenter(image, prompt="a dog", threshold="0.5")
        with pytest.raises(ValueError, match="cannot be encoded as UTF-8"):
            segmenter(image, prompt="a \ud800 dog")
        with pytest.raises(ValueError, match="takes one image per input, got a batch of 2 images"):
            segmenter(np.zeros((2, 8, 8, 3), np.uint8), prompt="a dog")
    finally:
        hook.remove()
    assert calls == []


def test_remote_code_without_the_package_gives_the_same_masks(saved, tmp_path):
    folder, model, processor = saved
    image = random_image(80, 150, seed=6)
    image.save(tmp_path / "image.png")
    expected = model.segment(image, ["a dog", "the cat"], processor=processor)
    torch.save(expected.masks, tmp_path / "expected.pt")
    script = f"""
        import numpy as np
        import PIL.Image
        import torch
        from transformers import AutoModel, AutoProcessor, pipeline

        folder = {str(folder)!r}
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        image = PIL.Image.open({str(tmp_path / "image.png")!r})
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert "transformers_modules" in type(processor).__module__
        result = model.segment(image, ["a dog", "the cat"], processor=processor)
        assert torch.equal(result.masks, expected)
        segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
        masks = [np.asarray(entry["mask"]) > 0 for entry in segmenter(image, prompts=["a dog", "the cat"])]
        assert torch.equal(torch.from_numpy(np.stack(masks)), expected)
        """
    result = run_without_package(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
