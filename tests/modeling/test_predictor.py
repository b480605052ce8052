"""`segment()`, semantic maps, chat-then-segment, and the errors users get for bad input."""

import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.modeling.predictor import Self1EPredictor


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
        [model.segment(image, name, processor=processor, return_probabilities=True).probabilities[0] for name in classes]
    )
    best, labels = per_class.max(0)
    expected = torch.where(best > 0.5, labels, torch.full_like(labels, -1))
    assert torch.equal(result.label_map, expected)
    assert result.prompts == classes
    for index in range(len(classes)):
        assert torch.equal(result.masks[index], expected == index)


def test_chat_then_segment_the_answer(pair):
    model, processor = pair
    image = random_image(64, 96)
    answer = model.chat(image, "What is in the picture?", processor=processor, max_new_tokens=4, do_sample=False)
    assert isinstance(answer, str)
    result = model.segment_answer(image, "Where are the cars?", "Sure, [SEG] and [SEG].", processor=processor)
    assert result.masks.shape == (2, 64, 96)
    with pytest.raises(ValueError, match="answer contains no \\[SEG\\]"):
        model.segment_answer(image, "Where?", "Nowhere.", processor=processor)


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
