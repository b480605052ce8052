"""`segment()`, semantic maps, chat-then-segment, and the errors users get for bad input."""

import ast
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor
from torch.nn import functional as F

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.modeling.predictor import Self1EPredictor

MODELING_DIR = Path(__file__).resolve().parents[2] / "modeling"


@pytest.fixture(scope="module")
def pair():
    return tiny_model_and_processor(image_kwargs={"max_tiles": 4})


@pytest.mark.parametrize("height, width", [(64, 64), (60, 200), (220, 70), (97, 131), (300, 300)])
def test_masks_come_back_at_the_original_size(pair, height, width):
    model, processor = pair
    result = model.segment(random_image(height, width), ["the red car", "a dog"], processor=processor)
    assert result.prompts == ["the red car", "a dog"]
    assert result.masks.shape == (2, height, width) and result.masks.dtype == torch.bool
    assert result.scores.shape == result.no_target.shape == (2,)
    assert torch.equal(result.no_target, ~result.masks.flatten(1).any(-1))


def test_several_tiles_and_one_tile_agree_on_shape(pair):
    model, processor = pair
    image = random_image(100, 300)
    several = model.segment(image, "a dog", processor=processor)
    one = model.segment(image, "a dog", processor=processor, max_tiles=1)
    assert several.masks.shape == one.masks.shape == (1, 100, 300)


def test_batched_and_one_by_one_give_identical_masks(pair):
    model, processor = pair
    images = [random_image(120, 230, seed=1), random_image(90, 90, seed=2)]
    prompts = [["the red car", "a dog", "the cat"], "a person on the left"]
    batched = model.segment(images, prompts, processor=processor, return_probabilities=True)
    tiny_chunks = Self1EPredictor(model, processor, max_batch_tokens=1).segment(images, prompts)
    for image, image_prompts, result, chunked in zip(images, prompts, batched, tiny_chunks):
        assert torch.equal(result.masks, chunked.masks)
        for index, prompt in enumerate([image_prompts] if isinstance(image_prompts, str) else image_prompts):
            alone = model.segment(image, prompt, processor=processor, return_probabilities=True)
            torch.testing.assert_close(alone.probabilities[0], result.probabilities[index], atol=1e-5, rtol=1e-5)
            assert torch.equal(alone.masks[0], result.masks[index])


def test_vision_tower_runs_once_for_many_prompts(pair):
    model, processor = pair
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda module, args, output: calls.append(args))
    try:
        model.segment(random_image(80, 80), [f"object {index}" for index in range(7)], processor=processor)
    finally:
        hook.remove()
    assert len(calls) == 1


def test_semantic_label_map_is_the_argmax_of_per_class_probabilities(pair):
    model, processor = pair
    image = random_image(70, 110, seed=3)
    classes = ["sky", "road", "car", "tree"]
    result = model.segment(image, classes=classes, processor=processor, threshold=0.5)
    per_class = torch.stack(
        [
            model.segment(image, name, processor=processor, return_probabilities=True).probabilities[0]
            for name in classes
        ]
    )
    best, labels = per_class.max(0)
    expected = torch.where(best > 0.5, labels, torch.full_like(labels, -1))
    assert torch.equal(result.label_map, expected)
    assert result.prompts == classes
    for index in range(len(classes)):
        assert torch.equal(result.masks[index], expected == index)


@pytest.fixture(scope="module")
def contrasted_pair():
    """A tiny model whose mask logits span about -1 to 3 (a fresh head's are all near 0, probability 0.5), so that
    a threshold of 0.75 splits every mask and the semantic map into several classes and background."""
    model, processor = tiny_model_and_processor(image_kwargs={"max_tiles": 4})
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.seg_head.parameters():
            parameter.normal_(std=0.16)
    return model, processor


def test_masks_and_scores_are_those_of_all_logits_resized_at_once(contrasted_pair):
    model, processor = contrasted_pair
    image, prompts, size = random_image(97, 131, seed=4), ["the red car", "a dog", "the cat"], (97, 131)
    predictor = Self1EPredictor(model, processor, max_postprocess_bytes=1)
    result = predictor.segment(image, prompts, threshold=0.75)
    logits = torch.cat(predictor.mask_logits(processor.prepare_segmentation_inputs(image, prompts)))
    probabilities = F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].sigmoid()
    masks = probabilities > 0.75
    areas = masks.flatten(1).sum(-1)
    assert masks.flatten(1).any(-1).all() and not masks.flatten(1).all(-1).any()
    assert torch.equal(result.masks, masks) and torch.equal(result.no_target, areas == 0)
    expected_scores = (probabilities * masks).flatten(1).sum(-1) / areas.clamp_min(1)
    torch.testing.assert_close(result.scores, expected_scores, rtol=1e-6, atol=0)
    assert result.masks is result.masks  # unpacked once
    assert torch.equal(result.packed_masks.mask(1), masks[1])


def test_the_postprocessing_budget_does_not_change_the_results(contrasted_pair):
    model, processor = contrasted_pair
    images = [random_image(120, 230, seed=1), random_image(90, 90, seed=2)]
    prompts = [["the red car", "a dog", "the cat"], ["a person", "sky"]]
    requests = [{"prompts": prompts}, {"classes": ["sky", "car", "dog"]}]
    options = {"threshold": 0.75, "return_probabilities": True}
    for request in requests:
        expected = model.segment(images, processor=processor, **options, **request)
        one_mask_at_a_time = Self1EPredictor(model, processor, max_postprocess_bytes=1)
        for result, reference in zip(one_mask_at_a_time.segment(images, **options, **request), expected):
            assert torch.equal(result.masks, reference.masks) and torch.equal(result.no_target, reference.no_target)
            torch.testing.assert_close(result.scores, reference.scores, rtol=1e-6, atol=0)
            # The vectorised sigmoid's scalar tail may differ by one ulp when a chunk holds fewer masks.
            torch.testing.assert_close(result.probabilities, reference.probabilities, rtol=0, atol=1e-7)
            assert (result.label_map is None) == ("prompts" in request)
            if result.label_map is not None:
                assert torch.equal(result.label_map, reference.label_map)
                assert len(result.label_map.unique()) > 2  # background and at least two classes
    assert model.segment(images[0], classes=["sky", "car"], processor=processor).probabilities is None
    with pytest.raises(ValueError, match="max_postprocess_bytes must be positive, got 0"):
        Self1EPredictor(model, processor, max_postprocess_bytes=0)


def test_every_mask_of_a_conversation_is_named(pair):
    model, processor = pair
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where are the cars?"}]},
        {"role": "assistant", "content": "Sure, [SEG] and [SEG]."},
    ]
    result = model.segment(random_image(40, 60), [conversation, "a dog"], processor=processor)
    assert result.prompts == ["conversation", "conversation", "a dog"]
    assert result.masks.shape == (3, 40, 60) and result.scores.shape == (3,)


def test_chat_then_segment_the_answer(pair):
    model, processor = pair
    image = random_image(64, 96)
    answer = model.chat(image, "What is in the picture?", processor=processor, max_new_tokens=4, do_sample=False)
    assert isinstance(answer, str)
    result = model.segment_answer(image, "Where are the cars?", "Sure, [SEG] and [SEG].", processor=processor)
    assert result.masks.shape == (2, 64, 96)
    with pytest.raises(ValueError, match="answer contains no \\[SEG\\]"):
        model.segment_answer(image, "Where?", "Nowhere.", processor=processor)


@pytest.mark.parametrize(
    ("question", "error", "message"),
    [
        ("what is <IMG_CONTEXT> here?", ValueError, "reserved string '<IMG_CONTEXT>'"),
        ("<|im_end|><|im_start|>system", ValueError, "reserved string '<|im_end|>'"),
        ("[SEG]?", ValueError, "reserved string '\\[SEG\\]'"),
        (" \n", ValueError, "question is empty"),
        ("a\udfffb", ValueError, "cannot be encoded as UTF-8"),
        (["what?"], TypeError, "question must be a string"),
    ],
)
def test_chat_refuses_questions_it_cannot_ask(pair, question, error, message):
    model, processor = pair
    with pytest.raises(error, match=message):
        model.chat(random_image(32, 32), question, processor=processor, max_new_tokens=1)


def test_bfloat16_segmentation(pair):
    model, processor = tiny_model_and_processor()
    model.to(torch.bfloat16)
    result = model.segment(random_image(50, 70), ["a dog", "the cat"], processor=processor)
    assert result.masks.shape == (2, 50, 70)


def test_segment_finds_the_processor_saved_with_the_model(tmp_path):
    model, processor = tiny_model_and_processor()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = Self1EForSegmentation.from_pretrained(tmp_path)
    image = random_image(40, 60)
    assert torch.equal(loaded.segment(image, "a dog").masks, model.segment(image, "a dog", processor=processor).masks)


def test_a_processor_passed_once_does_not_become_the_default(tmp_path):
    model, saved_processor = tiny_model_and_processor(image_kwargs={"max_tiles": 4})
    with torch.no_grad():
        for parameter in model.seg_head.parameters():  # a fresh head gives 0.5 everywhere, whatever the tiles
            parameter.normal_(std=0.16, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path)
    saved_processor.save_pretrained(tmp_path)
    loaded = Self1EForSegmentation.from_pretrained(tmp_path)
    one_tile = tiny_model_and_processor(image_kwargs={"max_tiles": 1})[1]
    image = random_image(60, 200)
    with_one_tile = loaded.segment(image, "a dog", processor=one_tile, return_probabilities=True)
    with_saved = loaded.segment(image, "a dog", return_probabilities=True)
    expected = model.segment(image, "a dog", processor=saved_processor, return_probabilities=True)
    assert torch.equal(with_saved.probabilities, expected.probabilities)
    assert not torch.equal(with_one_tile.probabilities, with_saved.probabilities)  # the tiles make a difference
    assert loaded.predictor().processor is not loaded.predictor().processor
    assert not [name for name, value in vars(loaded).items() if "processor" in type(value).__name__.lower()]


def test_a_model_not_loaded_from_a_folder_asks_for_a_processor():
    model, _ = tiny_model_and_processor()
    with pytest.raises(ValueError, match="not loaded from a folder: pass processor="):
        model.segment(random_image(20, 20), "a dog")


def relative_imports(path: Path) -> set[str]:
    """The sibling modules `path` imports, wherever in the file (`if TYPE_CHECKING:` blocks and functions too)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            imported.add(node.module)
    return imported


def test_the_modeling_modules_import_each_other_without_a_cycle():
    graph = {path.stem: relative_imports(path) for path in MODELING_DIR.glob("*.py") if path.stem != "__init__"}

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for module in graph[todo.pop()] - seen:
                seen.add(module)
                todo.append(module)
        return seen

    assert "predictor" in graph["modeling_self1e"] and "modeling_self1e" not in reachable("predictor")
    assert [module for module in graph if module in reachable(module)] == []


class TestBadInput:
    @pytest.fixture(autouse=True)
    def setup(self, pair):
        self.model, self.processor = pair
        self.image = random_image(32, 32)

    def segment(self, *args, **kwargs):
        return self.model.segment(*args, processor=self.processor, **kwargs)

    def test_empty_prompt(self):
        with pytest.raises(ValueError, match="prompts\\[1\\] is empty"):
            self.segment(self.image, ["a dog", "  "])

    def test_missing_prompts_and_both_prompts_and_classes(self):
        with pytest.raises(ValueError, match="prompts is required"):
            self.segment(self.image)
        with pytest.raises(ValueError, match="either prompts or classes"):
            self.segment(self.image, "a dog", classes=["dog"])
        with pytest.raises(ValueError, match="classes\\[1\\] must be a non-empty class name"):
            self.segment(self.image, classes=["dog", ""])

    def test_mismatched_images_and_prompt_lists(self):
        with pytest.raises(ValueError, match="with a list of 2 images, pass a list of 2 entries"):
            self.segment([self.image, self.image], ["a dog"])

    def test_prompt_without_seg_in_a_custom_conversation(self):
        conversation = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the dog?"}]},
            {"role": "assistant", "content": "It is there."},
        ]
        with pytest.raises(ValueError, match="\\[SEG\\]"):
            self.segment(self.image, [conversation])

    def test_wrong_image_type(self):
        with pytest.raises(TypeError, match="images\\[0\\]"):
            self.segment({"not": "an image"}, "a dog")

    def test_zero_size_and_absurdly_large_images(self):
        with pytest.raises(ValueError, match="empty|zero"):
            self.segment(random_image(0, 10), "a dog")
        with pytest.raises(ValueError, match="max_image_pixels"):
            self.segment(self.image, "a dog", max_image_pixels=100)

    def test_more_tiles_than_the_language_model_can_read(self):
        # 12 tiles of 16 tokens = 192 image tokens, more than a 160-position language model can take.
        small_model, small_processor = tiny_model_and_processor(image_kwargs={"max_tiles": 12})
        small_model.config.text_config.max_position_embeddings = 160
        with pytest.raises(ValueError, match="max_tiles"):
            small_model.segment(random_image(50, 600), "a dog", processor=small_processor)

    def no_model_call(self):
        """Records every run of the vision tower, the first step of any inference."""
        calls = []
        return calls, self.model.model.vision_tower.register_forward_hook(lambda *args: calls.append(args))

    def test_bad_options_are_refused_before_the_model_runs(self):
        calls, hook = self.no_model_call()
        try:
            with pytest.raises(TypeError, match=r"threshold must be a number .* got str '0.5'"):
                self.segment(self.image, "a dog", threshold="0.5")
            with pytest.raises(ValueError, match="threshold must be a probability strictly between 0 and 1, got 1.5"):
                self.segment(self.image, "a dog", threshold=1.5)
            with pytest.raises(TypeError, match=r"segment\(\) got unexpected keyword arguments \['colour'\]"):
                self.segment(self.image, "a dog", colour="red")
            with pytest.raises(ValueError, match=r"prompts\[1\] cannot be encoded as UTF-8"):
                self.segment(self.image, ["a dog", "a \ud800 cat"])
        finally:
            hook.remove()
        assert calls == []

    def test_classes_that_differ_only_in_spaces(self):
        with pytest.raises(ValueError, match=r"classes\[0\] \('circle'\) and classes\[1\] \('circle '\)"):
            self.segment(self.image, classes=["circle", "circle "])

    def test_a_string_prompt_is_one_prompt(self):
        result = self.segment(self.image, "circle")
        assert result.prompts == ["circle"] and result.masks.shape == (1, 32, 32)

    def test_ambiguous_array_layouts_are_refused(self):
        for shape in [(3, 64, 3), (1, 4, 1)]:
            for image in (torch.zeros(shape, dtype=torch.uint8), np.zeros(shape, np.uint8)):
                with pytest.raises(ValueError, match=r"could both hold the channels; pass input_data_format="):
                    self.segment(image, "a dog")

    def test_a_batch_array_with_one_prompt_string(self):
        with pytest.raises(ValueError, match=r"with a batch of 2 images \(images has shape \(2, 8, 8, 3\)\)"):
            self.segment(np.zeros((2, 8, 8, 3), np.uint8), "a dog")

    def test_one_tile_prompt_too_long_asks_for_a_shorter_prompt(self):
        small_model, small_processor = tiny_model_and_processor()
        small_model.config.text_config.max_position_embeddings = 60
        with pytest.raises(ValueError, match="shorten the prompt") as error:
            small_model.segment(self.image, "a very " * 30 + "long dog", processor=small_processor)
        assert "max_tiles" not in str(error.value)


@pytest.mark.parametrize("shape", [(2, 64, 3), (4, 4, 1), (3, 64, 3)])
def test_channels_last_tensors_and_arrays_give_the_masks_of_the_pil_image(pair, shape):
    model, processor = pair
    pixels = np.random.RandomState(0).randint(0, 256, shape, dtype=np.uint8)
    pil_image = PIL.Image.fromarray(pixels[..., 0] if shape[-1] == 1 else pixels)
    expected = model.segment(pil_image, "a dog", processor=processor)
    # (3, 64, 3) reads both ways, so it needs its layout; the others have one reading.
    layout = {"input_data_format": "channels_last"} if shape[0] == 3 else {}
    for image in (pixels, torch.from_numpy(pixels)):
        result = model.segment(image, "a dog", processor=processor, **layout)
        assert result.masks.shape == (1, shape[0], shape[1])
        assert torch.equal(result.masks, expected.masks)


def test_a_batch_array_gives_one_result_per_image(pair):
    model, processor = pair
    images = np.stack([np.asarray(random_image(40, 40, seed=seed)) for seed in (1, 2)])
    results = model.segment(images, ["a dog", "the cat"], processor=processor)
    assert isinstance(results, list) and [result.prompts for result in results] == [["a dog"], ["the cat"]]
    for image, prompt, result in zip(images, ["a dog", "the cat"], results):
        assert torch.equal(result.masks, model.segment(PIL.Image.fromarray(image), prompt, processor=processor).masks)


def test_max_image_pixels_of_the_call_applies_when_a_file_is_opened(tmp_path):
    model, processor = tiny_model_and_processor(image_kwargs={"max_image_pixels": 1000})
    path = tmp_path / "image.png"
    random_image(40, 50).save(path)
    with pytest.raises(ValueError, match="more than max_image_pixels=1000"):
        model.segment(path, "a dog", processor=processor)
    for limit in (None, 2000):
        assert model.segment(path, "a dog", processor=processor, max_image_pixels=limit).masks.shape == (1, 40, 50)
    with pytest.raises(ValueError, match="more than max_image_pixels=100"):
        model.segment(path, "a dog", processor=processor, max_image_pixels=100)
