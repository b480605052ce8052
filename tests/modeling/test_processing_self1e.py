"""Tests of the SELF1E image processor and processor: prompt format, token layout, tiling, inputs, save/load."""

import ast
import io
import json
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.tokenizer import tiny_qwen2_tokenizer
from transformers_self1e.modeling.image_processing_self1e import Self1EImageProcessor
from transformers_self1e.modeling.processing_self1e import Self1EProcessor
from transformers_self1e.modeling.prompts_self1e import (
    ANSWER_TEMPLATES,
    LONG_QUESTION_TEMPLATES,
    SELF1E_CHAT_TEMPLATE,
    SHORT_QUESTION_TEMPLATES,
    build_answer,
    build_question,
)

MODELING_DIR = Path(__file__).resolve().parents[2] / "modeling"
TILE = 112
TOKENS_PER_TILE = 16
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# The prompt of the released checkpoints, copied from ../shared/reference/README.md ("Prompt format").
REFERENCE_PROMPT = (
    "<|im_start|>system\nYou are an helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n What is {text} in this "
    "image? Please output segmentation mask.<|im_end|>\n<|im_start|>assistant\n[SEG].<|im_end|>\n"
)
REFERENCE_INSTRUCTION_PROMPT = (
    "<|im_start|>system\nYou are an helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n {instruction} Please "
    "output segmentation mask.<|im_end|>\n<|im_start|>assistant\n[SEG].<|im_end|>\n"
)


def expand_image(prompt: str, tiles: int) -> str:
    return prompt.replace("<image>", "<img>" + "<IMG_CONTEXT>" * (TOKENS_PER_TILE * tiles) + "</img>")


def make_processor(tokenizer=None, **image_kwargs) -> Self1EProcessor:
    image_processor = Self1EImageProcessor(size=TILE, **image_kwargs)
    return Self1EProcessor(image_processor, tokenizer or tiny_qwen2_tokenizer(), image_seq_length=TOKENS_PER_TILE)


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)


def reference_tile(rgb: np.ndarray) -> np.ndarray:
    """InternVL's per-tile transform written out: PIL bicubic resize, /255, ImageNet mean/std, CHW."""
    resized = np.asarray(PIL.Image.fromarray(rgb).resize((TILE, TILE), PIL.Image.BICUBIC), dtype=np.float32) / 255.0
    return ((resized - MEAN) / STD).transpose(2, 0, 1)


def internvl_grid(height: int, width: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """InternVL's `dynamic_preprocess` grid rule, written independently; returns (rows, cols)."""
    grids = sorted(
        {
            (cols, rows)
            for n in range(min_tiles, max_tiles + 1)
            for cols in range(1, n + 1)
            for rows in range(1, n + 1)
            if min_tiles <= cols * rows <= max_tiles
        },
        key=lambda grid: grid[0] * grid[1],
    )
    aspect, best, best_diff = width / height, (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * TILE * TILE * cols * rows:
            best = (cols, rows)
    return best[1], best[0]


# ----------------------------------------------------------------------------------------------------------
# Prompt format and token layout
# ----------------------------------------------------------------------------------------------------------


def test_chat_template_reproduces_reference_prompt_byte_for_byte():
    processor = make_processor()
    expected = REFERENCE_PROMPT.replace("{text}", "the red car")
    conversation = processor.build_segmentation_conversation("the red car")
    assert conversation == [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "What is the red car in this image? Please output segmentation mask."},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "[SEG]."}]},
    ]
    assert processor.apply_chat_template(conversation, tokenize=False) == expected
    assert processor.tokenizer.apply_chat_template(conversation, tokenize=False) == expected
    assert processor.render_segmentation_prompt("the red car") == expected
    # A hand-written conversation renders the same, with or without a space of its own after the image.
    for text in (
        "What is the red car in this image? Please output segmentation mask.",
        " What is the red car in this image? Please output segmentation mask.",
    ):
        hand_written = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
            {"role": "assistant", "content": "[SEG]."},
        ]
        assert processor.apply_chat_template(hand_written, tokenize=False) == expected


def test_instruction_prompt_and_generation_prompt():
    processor = make_processor()
    instruction = "Which object in the kitchen would you use to cut bread?"
    expected = REFERENCE_INSTRUCTION_PROMPT.replace("{instruction}", instruction)
    assert processor.render_segmentation_prompt(instruction, prompt_type="instruction") == expected
    question_only = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    rendered = processor.apply_chat_template(question_only, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are an helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n Describe it."
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *question_only]
    assert processor.apply_chat_template(with_system, tokenize=False).startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    )


@pytest.mark.parametrize("image_size,max_tiles,tiles", [((40, 56), 1, 1), ((224, 224), 4, 4), ((112, 336), 6, 3)])
def test_input_ids_decode_to_the_reference_prompt_with_image_tokens(image_size, max_tiles, tiles):
    processor = make_processor(max_tiles=max_tiles)
    image = PIL.Image.fromarray(random_rgb(*image_size))
    inputs = processor.prepare_segmentation_inputs(image, "the red car")
    expected = expand_image(REFERENCE_PROMPT.replace("{text}", "the red car"), tiles)
    assert processor.tokenizer.decode(inputs["input_ids"][0]) == expected
    assert inputs["pixel_values"].shape == (tiles, 3, TILE, TILE)
    assert int(inputs["num_tiles"][0]) == tiles


def test_token_layout():
    processor = make_processor(max_tiles=4)
    tokenizer, ids = processor.tokenizer, processor.token_ids
    image = PIL.Image.fromarray(random_rgb(224, 224))
    input_ids = processor.prepare_segmentation_inputs(image, "the red car")["input_ids"][0].tolist()

    start = input_ids.index(ids["image_start_token_id"])
    n_context = TOKENS_PER_TILE * 4
    assert input_ids[start + 1 : start + 1 + n_context] == [ids["image_token_id"]] * n_context
    assert input_ids[start + 1 + n_context] == ids["image_end_token_id"]
    assert input_ids.count(ids["image_token_id"]) == n_context
    prefix = "<|im_start|>system\nYou are an helpful assistant.<|im_end|>\n<|im_start|>user\n"
    suffix = " What is the red car in this image? Please output segmentation mask.<|im_end|>\n<|im_start|>assistant\n"
    assert input_ids[:start] == tokenizer(prefix, add_special_tokens=False)["input_ids"]
    rest = input_ids[start + 2 + n_context :]
    assert rest == tokenizer("\n" + suffix + "[SEG].<|im_end|>\n", add_special_tokens=False)["input_ids"]
    # [SEG] is a single token, exactly once, right before "." in the answer.
    assert input_ids.count(ids["seg_token_id"]) == 1
    assert tokenizer.convert_ids_to_tokens(ids["seg_token_id"]) == "[SEG]"
    assert tokenizer("[SEG]", add_special_tokens=False)["input_ids"] == [ids["seg_token_id"]]


def test_special_tokens_added_once_and_reported():
    tokenizer = tiny_qwen2_tokenizer()
    before = len(tokenizer)
    processor = make_processor(tokenizer)
    ids = processor.token_ids
    assert sorted(ids.values()) == list(range(before, before + 4))
    assert ids == {
        "image_start_token_id": tokenizer.convert_tokens_to_ids("<img>"),
        "image_end_token_id": tokenizer.convert_tokens_to_ids("</img>"),
        "image_token_id": tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        "seg_token_id": tokenizer.convert_tokens_to_ids("[SEG]"),
    }
    assert processor.image_token_ids == [ids["image_token_id"], ids["image_start_token_id"], ids["image_end_token_id"]]
    # A second processor on the same tokenizer adds nothing.
    assert make_processor(tokenizer).token_ids == ids and len(tokenizer) == before + 4
    # [SEG] stays visible in decoded text (added, not special), the image tokens are special.
    assert tokenizer.decode([ids["seg_token_id"], ids["image_token_id"]], skip_special_tokens=True) == "[SEG]"


def test_existing_internvl_tokens_are_kept():
    tokenizer = tiny_qwen2_tokenizer(extra_added_tokens=("<img>", "</img>", "<IMG_CONTEXT>"))
    existing = [tokenizer.convert_tokens_to_ids(token) for token in ("<img>", "</img>", "<IMG_CONTEXT>")]
    size = len(tokenizer)
    processor = make_processor(tokenizer)
    assert [processor.start_image_token_id, processor.end_image_token_id, processor.image_token_id] == existing
    assert processor.seg_token_id == size and len(tokenizer) == size + 1


def test_check_model_config():
    from transformers_self1e.presets import tiny_config

    processor = make_processor()
    matching = tiny_config(
        text_config={"vocab_size": len(processor.tokenizer)},
        image_token_id=processor.image_token_id,
        seg_token_id=processor.seg_token_id,
    )
    assert processor.check_model_config(matching) == []
    wrong = tiny_config()  # the record's ids (90, 93) and a vocabulary of 100
    problems = processor.check_model_config(wrong, raise_error=False)
    assert any("image_token_id" in problem for problem in problems)
    assert any("seg_token_id" in problem for problem in problems)
    assert any("vocabulary" in problem for problem in problems)
    with pytest.raises(ValueError, match="seg_token_id"):
        processor.check_model_config(wrong)
    built = Self1EProcessor.from_model_config(matching, tiny_qwen2_tokenizer())
    assert built.image_seq_length == matching.image_tokens_per_tile == TOKENS_PER_TILE
    assert built.image_processor.tile_size == matching.tile_size == TILE


# ----------------------------------------------------------------------------------------------------------
# Prompt families (paper Sec. 9)
# ----------------------------------------------------------------------------------------------------------


def test_prompt_families_match_the_paper():
    assert SHORT_QUESTION_TEMPLATES == (
        "Can you segment the {text} in this image?",
        "Please segment the {text} in this image.",
        "What is {text} in this image? Please respond with segmentation mask.",
        "What is {text} in this image? Please output segmentation mask.",
    )
    assert LONG_QUESTION_TEMPLATES == (
        "{instruction} Please respond with segmentation mask.",
        "{instruction} Please output segmentation mask.",
    )
    assert ANSWER_TEMPLATES == (
        "It is [SEG].",
        "Sure, [SEG].",
        "Sure, it is [SEG].",
        "Sure, the segmentation result is [SEG].",
        "[SEG].",
    )
    assert build_question("dog") == "What is dog in this image? Please output segmentation mask."
    assert build_question("Find it.", "instruction") == "Find it. Please output segmentation mask."
    assert build_answer() == "[SEG]."


def test_training_prompts_are_random_and_seeded():
    def draw(rng):
        return [(build_question("dog", rng=rng), build_answer(rng=rng)) for _ in range(200)]

    first, second = draw(random.Random(3)), draw(random.Random(3))
    assert first == second
    assert {question for question, _ in first} == {t.replace("{text}", "dog") for t in SHORT_QUESTION_TEMPLATES}
    assert {answer for _, answer in first} == set(ANSWER_TEMPLATES)
    long_questions = {build_question("Find it.", "instruction", rng=random.Random(seed)) for seed in range(30)}
    assert long_questions == {t.replace("{instruction}", "Find it.") for t in LONG_QUESTION_TEMPLATES}

    processor = make_processor()
    image = PIL.Image.fromarray(random_rgb(40, 56))

    def texts(seed):
        inputs = processor.prepare_segmentation_inputs(image, ["dog", "cat"] * 5, rng=seed)
        return processor.batch_decode(inputs["input_ids"], skip_special_tokens=True)

    assert texts(7) == texts(7) and texts(7) != texts(8)
    assert all("[SEG]" in text for text in texts(7))


def test_custom_templates():
    processor = make_processor()
    image = PIL.Image.fromarray(random_rgb(40, 56))
    inputs = processor.prepare_segmentation_inputs(
        image, "cat", question_template="Segment {text} {please}.", answer_template="Here: [SEG] and [SEG]."
    )
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "</img>\n Segment cat {please}.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\nHere: [SEG] and [SEG].<|im_end|>\n")
    assert inputs["input_ids"][0].tolist().count(processor.seg_token_id) == 2


def conversation(question: str, answer: str, image: bool = True) -> list[dict]:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
    return [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def test_conversations_as_prompts():
    processor = make_processor()
    image = PIL.Image.fromarray(random_rgb(40, 56))
    custom = conversation("Where is the cat?", "Sure, [SEG].")
    inputs = processor.prepare_segmentation_inputs(image, [custom, "the dog"])
    texts = [
        processor.tokenizer.decode(ids[mask.bool()])
        for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])
    ]
    assert texts[0] == expand_image(
        "<|im_start|>system\nYou are an helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n Where is the cat?"
        "<|im_end|>\n<|im_start|>assistant\nSure, [SEG].<|im_end|>\n",
        1,
    )
    assert texts[1] == expand_image(REFERENCE_PROMPT.replace("{text}", "the dog"), 1)
    assert inputs["prompt_to_image"].tolist() == [0, 0]
    single = processor.prepare_segmentation_inputs(image, custom)
    assert single["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match=r"^prompts: the assistant part must contain \[SEG\]"):
        processor.prepare_segmentation_inputs(image, conversation("Where is the cat?", "Sure, here."))
    with pytest.raises(ValueError, match=r"^prompts\[1\]: the assistant part must contain \[SEG\]"):
        processor.prepare_segmentation_inputs(image, [custom, conversation("Where is the cat?", "It is there.")])
    with pytest.raises(ValueError, match=r"^prompts\[0\]\[1\]: the assistant part must contain"):
        processor.prepare_segmentation_inputs([image], [[custom, conversation("Where?", "No.")]])
    with pytest.raises(ValueError, match=r"^prompts must hold exactly one image item"):
        processor.prepare_segmentation_inputs(image, conversation("Where is the cat?", "[SEG].", image=False))
    with pytest.raises(ValueError, match=r"^prompts is empty"):
        processor.prepare_segmentation_inputs(image, conversation("  ", "[SEG]."))
    with pytest.raises(ValueError, match=r"^prompts\[0\] contains the reserved string '\[SEG\]'"):
        processor.prepare_segmentation_inputs(image, conversation("Is [SEG] the cat?", "[SEG]."))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"prompts": ""}, ValueError, r"^prompts is empty"),
        ({"prompts": ["cat", "   "]}, ValueError, r"^prompts\[1\] is empty"),
        ({"prompts": []}, ValueError, r"^prompts is empty"),
        (
            {"prompts": "cat", "answer_template": "Sure, it is here."},
            ValueError,
            r"^answer_template must contain \[SEG\]",
        ),
        ({"prompts": "cat", "question_template": "Segment it."}, ValueError, r"^question_template must contain"),
        ({"prompts": "the [SEG] cat"}, ValueError, r"^prompts contains the reserved string '\[SEG\]'"),
        ({"prompts": ["cat", "an <image> of"]}, ValueError, r"^prompts\[1\] contains the reserved string '<image>'"),
        ({"prompts": ["cat", 3]}, TypeError, r"^prompts\[1\] must be a string"),
        ({"prompts": "cat", "prompt_type": "long"}, ValueError, r"^prompt_type must be one of"),
        ({"prompts": "cat", "min_tiles": 3, "max_tiles": 2}, ValueError, r"max_tiles=2"),
        ({"prompts": "cat", "max_tiles": 0}, ValueError, r"^max_tiles must be a positive integer"),
        ({"prompts": "cat", "rng": "seed"}, TypeError, r"^rng must be"),
    ],
)
def test_bad_prompts_raise_naming_the_argument(kwargs, error, match):
    processor = make_processor()
    image = PIL.Image.fromarray(random_rgb(40, 56))
    with pytest.raises(error, match=match):
        processor.prepare_segmentation_inputs(image, **kwargs)


def test_bad_prompt_structure_and_chat_template():
    processor = make_processor()
    image = PIL.Image.fromarray(random_rgb(40, 56))
    with pytest.raises(ValueError, match=r"^prompts: with a list of 2 images"):
        processor.prepare_segmentation_inputs([image, image], ["cat"])
    with pytest.raises(ValueError, match=r"^prompts\[1\] is empty"):
        processor.prepare_segmentation_inputs([image, image], [["cat"], []])
    no_answer = SELF1E_CHAT_TEMPLATE.replace("render_content(message['content']) + '<|im_end|>'", "'<|im_end|>'")
    assert no_answer != SELF1E_CHAT_TEMPLATE
    with pytest.raises(ValueError, match=r"^chat_template must render the assistant answer"):
        processor.prepare_segmentation_inputs(image, "cat", chat_template=no_answer)
    with pytest.raises(ValueError, match=r"^min_tiles=5 asks for more tiles than max_tiles=4"):
        Self1EImageProcessor(size=TILE, min_tiles=5, max_tiles=4)
    with pytest.raises(ValueError, match=r"^do_resize=False is not supported"):
        Self1EImageProcessor(size=TILE)(image, do_resize=False)


# ----------------------------------------------------------------------------------------------------------
# Tiling
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height,width,min_tiles,max_tiles,expected",
    [
        (224, 224, 1, 4, (2, 2)),  # square, large enough for the bigger square grid
        (50, 50, 1, 4, (1, 1)),  # square but small: the tie stays at one tile
        (112, 224, 1, 4, (1, 2)),  # wide 2:1
        (336, 112, 1, 6, (3, 1)),  # tall 1:3
        (37, 53, 1, 6, (2, 3)),  # odd size, aspect 1.43 -> 3:2
        (10, 1000, 1, 12, (1, 12)),  # extreme panorama
        (112, 112, 2, 4, (2, 2)),  # min_tiles excludes 1x1
        (300, 200, 1, 12, (3, 2)),
    ],
)
def test_tile_grid_follows_internvl_rule(height, width, min_tiles, max_tiles, expected):
    assert internvl_grid(height, width, min_tiles, max_tiles) == expected
    image_processor = Self1EImageProcessor(size=TILE, min_tiles=min_tiles, max_tiles=max_tiles)
    outputs = image_processor(PIL.Image.fromarray(random_rgb(height, width)), return_tensors="pt")
    rows, cols = expected
    assert outputs["tile_grids"].tolist() == [[rows, cols]]
    assert outputs["tile_grids"].dtype == torch.long
    assert outputs["num_tiles"].tolist() == [rows * cols]
    assert outputs["has_thumbnail"].tolist() == [False]
    assert outputs["original_sizes"].tolist() == [[height, width]]
    assert outputs["pixel_values"].shape == (rows * cols, 3, TILE, TILE)
    assert image_processor.get_tile_grid(height, width) == expected


def test_tile_grid_matches_internvl_on_many_sizes():
    image_processor = Self1EImageProcessor(size=TILE)
    rng = np.random.RandomState(0)
    for _ in range(300):
        height, width = (int(side) for side in rng.randint(1, 1500, size=2))
        max_tiles = int(rng.choice([1, 2, 4, 6, 9, 12]))
        min_tiles = int(rng.randint(1, max_tiles + 1))
        assert image_processor.get_tile_grid(height, width, min_tiles, max_tiles) == internvl_grid(
            height, width, min_tiles, max_tiles
        ), (height, width, min_tiles, max_tiles)


@pytest.mark.parametrize("rows,cols", [(2, 3), (3, 2)])
def test_tiles_are_in_raster_order(rows, cols):
    colors = np.random.RandomState(rows).randint(0, 256, (rows, cols, 3)).astype(np.uint8)
    # Each block is exactly one tile, so the resize to the grid is the identity and colours stay exact.
    image = np.kron(colors, np.ones((TILE, TILE, 1), dtype=np.uint8))
    outputs = Self1EImageProcessor(size=TILE, max_tiles=6)(PIL.Image.fromarray(image), return_tensors="pt")
    assert outputs["tile_grids"].tolist() == [[rows, cols]]
    pixel_values = outputs["pixel_values"].numpy()
    assert pixel_values.shape[0] == rows * cols
    for index, tile in enumerate(pixel_values):
        rgb = (tile.transpose(1, 2, 0) * STD + MEAN) * 255.0
        np.testing.assert_allclose(rgb, np.broadcast_to(colors[index // cols, index % cols], rgb.shape), atol=1e-3)


def test_single_tile_default_is_the_whole_image_resized():
    image_processor = Self1EImageProcessor(size=TILE)
    assert (image_processor.min_tiles, image_processor.max_tiles, image_processor.use_thumbnail) == (1, 1, False)
    for height, width in [(1000, 37), (40, 56), (300, 300)]:
        rgb = random_rgb(height, width)
        outputs = image_processor(PIL.Image.fromarray(rgb), return_tensors="pt")
        assert outputs["tile_grids"].tolist() == [[1, 1]]
        np.testing.assert_allclose(outputs["pixel_values"][0].numpy(), reference_tile(rgb), atol=1e-5)
    assert Self1EImageProcessor().tile_size == 448


def test_thumbnail_only_with_several_tiles():
    rgb = random_rgb(224, 224)
    image_processor = Self1EImageProcessor(size=TILE, max_tiles=4, use_thumbnail=True)
    outputs = image_processor([PIL.Image.fromarray(rgb), PIL.Image.fromarray(random_rgb(40, 40))], return_tensors="pt")
    assert outputs["tile_grids"].tolist() == [[2, 2], [1, 1]]
    assert outputs["num_tiles"].tolist() == [5, 1]
    assert outputs["has_thumbnail"].tolist() == [True, False]
    assert outputs["pixel_values"].shape == (6, 3, TILE, TILE)
    # The thumbnail is the image's last tile: the whole image resized to one tile.
    np.testing.assert_allclose(outputs["pixel_values"][4].numpy(), reference_tile(rgb), atol=1e-5)
    assert image_processor.get_number_of_image_patches(224, 224) == 5
    assert image_processor.get_number_of_image_patches(40, 40) == 1

    processor = make_processor(max_tiles=4, use_thumbnail=True)
    inputs = processor.prepare_segmentation_inputs(PIL.Image.fromarray(rgb), "cat")
    assert inputs["input_ids"][0].tolist().count(processor.image_token_id) == 5 * TOKENS_PER_TILE


# ----------------------------------------------------------------------------------------------------------
# Input conversion
# ----------------------------------------------------------------------------------------------------------

HEIGHT, WIDTH = 29, 41
RGB = random_rgb(HEIGHT, WIDTH, seed=5)
GRAY = RGB[..., 0]
GRAY3 = np.repeat(GRAY[..., None], 3, axis=-1)
ALPHA = random_rgb(HEIGHT, WIDTH, seed=6)[..., 0]


def _palette_image():
    return PIL.Image.fromarray(RGB).quantize(colors=16)


def _png(tmp_path, image: PIL.Image.Image, name: str = "image.png") -> Path:
    path = tmp_path / name
    image.save(path)
    return path


CONVERSIONS = {
    "pil_L": lambda tmp: (PIL.Image.fromarray(GRAY), GRAY3),
    "pil_LA": lambda tmp: (PIL.Image.fromarray(np.stack([GRAY, ALPHA], -1)), GRAY3),
    "pil_RGBA": lambda tmp: (PIL.Image.fromarray(np.dstack([RGB, ALPHA])), RGB),
    "pil_P": lambda tmp: (_palette_image(), np.asarray(_palette_image().convert("RGB"))),
    "pil_CMYK": lambda tmp: (
        PIL.Image.fromarray(RGB).convert("CMYK"),
        np.asarray(PIL.Image.fromarray(RGB).convert("CMYK").convert("RGB")),
    ),
    "pil_1": lambda tmp: (PIL.Image.fromarray(GRAY > 128), np.where(GRAY3 > 128, 255, 0).astype(np.uint8)),
    "pil_I;16": lambda tmp: (PIL.Image.fromarray(GRAY.astype(np.uint16) * 257), GRAY3),
    "pil_I;16B": lambda tmp: (PIL.Image.fromarray((GRAY.astype(np.uint16) * 257).astype(">u2")), GRAY3),
    "pil_I": lambda tmp: (PIL.Image.fromarray(GRAY.astype(np.int32) * 257), GRAY3),
    "numpy_uint8_hwc": lambda tmp: (RGB.copy(), RGB),
    "numpy_uint8_hw": lambda tmp: (GRAY.copy(), GRAY3),
    "numpy_uint8_hw1": lambda tmp: (GRAY[..., None].copy(), GRAY3),
    "numpy_uint8_hwc4": lambda tmp: (np.dstack([RGB, ALPHA]), RGB),
    "numpy_uint8_chw": lambda tmp: (RGB.transpose(2, 0, 1).copy(), RGB),
    "numpy_uint16": lambda tmp: (RGB.astype(np.uint16) * 257, RGB),
    "numpy_float32": lambda tmp: (RGB.astype(np.float32) / 255.0, RGB),
    "numpy_float64_hw": lambda tmp: (GRAY.astype(np.float64) / 255.0, GRAY3),
    "numpy_bool": lambda tmp: (GRAY > 128, np.where(GRAY3 > 128, 255, 0).astype(np.uint8)),
    "numpy_int64": lambda tmp: (RGB.astype(np.int64), RGB),
    "torch_uint8_chw": lambda tmp: (torch.from_numpy(RGB.transpose(2, 0, 1).copy()), RGB),
    "torch_uint8_hwc": lambda tmp: (torch.from_numpy(RGB.copy()), RGB),
    "torch_float_chw": lambda tmp: (torch.from_numpy(RGB.transpose(2, 0, 1) / 255.0).float(), RGB),
    "torch_float16_chw": lambda tmp: (torch.from_numpy(RGB.transpose(2, 0, 1) / 255.0).half(), RGB),
    "torch_uint8_hw": lambda tmp: (torch.from_numpy(GRAY.copy()), GRAY3),
    "path_str": lambda tmp: (str(_png(tmp, PIL.Image.fromarray(RGB))), RGB),
    "path_pathlib": lambda tmp: (_png(tmp, PIL.Image.fromarray(RGB)), RGB),
    "file_url": lambda tmp: (_png(tmp, PIL.Image.fromarray(RGB)).as_uri(), RGB),
    "file_url_quoted": lambda tmp: (_png(tmp, PIL.Image.fromarray(RGB), "my image #1.png").as_uri(), RGB),
    "path_png16": lambda tmp: (str(_png(tmp, PIL.Image.fromarray(GRAY.astype(np.uint16) * 257))), GRAY3),
    "path_rgba_png": lambda tmp: (str(_png(tmp, PIL.Image.fromarray(np.dstack([RGB, ALPHA])))), RGB),
}


@pytest.mark.parametrize("case", list(CONVERSIONS))
def test_input_types_give_the_pixels_of_the_equivalent_rgb_image(case, tmp_path):
    image, equivalent_rgb = CONVERSIONS[case](tmp_path)
    image_processor = Self1EImageProcessor(size=TILE, max_tiles=4)
    loaded = image_processor.fetch_images(image)
    assert isinstance(loaded, PIL.Image.Image) and loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded), equivalent_rgb)
    outputs = image_processor(image, return_tensors="pt")
    expected = image_processor(PIL.Image.fromarray(equivalent_rgb), return_tensors="pt")
    torch.testing.assert_close(outputs["pixel_values"], expected["pixel_values"], atol=1e-6, rtol=0)
    assert outputs["original_sizes"].tolist() == [[HEIGHT, WIDTH]]


def test_batched_arrays_nested_lists_and_mixed_types():
    image_processor = Self1EImageProcessor(size=TILE)
    batch = torch.from_numpy(np.stack([RGB, RGB[::-1].copy()]).transpose(0, 3, 1, 2).copy())
    outputs = image_processor([[batch], [PIL.Image.fromarray(GRAY)]], return_tensors="pt")
    assert outputs["pixel_values"].shape == (3, 3, TILE, TILE)
    expected = image_processor(
        [PIL.Image.fromarray(RGB), PIL.Image.fromarray(RGB[::-1].copy()), PIL.Image.fromarray(GRAY3)]
    )
    torch.testing.assert_close(outputs["pixel_values"], torch.as_tensor(np.stack(expected["pixel_values"])))


@pytest.mark.parametrize(
    "image,match",
    [
        (42, r"^images has unsupported type builtins\.int"),
        (b"\x89PNG", r"^images has unsupported type builtins\.bytes"),
        ({"path": "x.png"}, r"^images has unsupported type builtins\.dict"),
        ([RGB, object()], r"^images\[1\] has unsupported type builtins\.object"),
        (RGB.astype(np.complex64), r"^images has unsupported dtype complex64"),
    ],
)
def test_unsupported_types_raise_type_error(image, match):
    with pytest.raises(TypeError, match=match):
        Self1EImageProcessor(size=TILE)(image)


@pytest.mark.parametrize(
    "image,error,match",
    [
        (np.zeros((0, 5, 3), np.uint8), ValueError, r"^images is empty: 0x5"),
        (PIL.Image.new("RGB", (5, 0)), ValueError, r"^images is empty: 0x5"),
        (torch.zeros(3, 4, 0, dtype=torch.uint8), ValueError, r"^images is empty: 4x0"),
        (np.full((4, 4, 3), 1.5, np.float32), ValueError, r"float images must lie in \[0, 1\]"),
        (np.full((4, 4, 3), np.nan, np.float32), ValueError, r"NaN"),
        (np.full((4, 4, 3), 300, np.int64), ValueError, r"must lie in \[0, 255\]"),
        (np.zeros((5, 5, 7), np.uint8), ValueError, r"no axis of 1 to 4 channels"),
        (np.zeros((1, 2, 4, 4, 3), np.uint8), ValueError, r"must have 2 \(HxW\) or 3"),
        ("/nonexistent/image.png", FileNotFoundError, r"no image file"),
        ("https://example.com/cat.png", ValueError, r"https:// URLs are not fetched"),
        ("file://otherhost/image.png", ValueError, r"only local file:// URLs"),
    ],
)
def test_bad_images_raise(image, error, match):
    with pytest.raises(error, match=match):
        Self1EImageProcessor(size=TILE)(image)


@pytest.mark.parametrize("shape", [(2, 20, 3), (4, 4, 1), (5, 7, 4), (3, 20, 20), (4, 20, 20)])
def test_arrays_and_tensors_follow_one_layout_rule(shape):
    image_processor = Self1EImageProcessor(size=TILE)
    pixels = np.random.RandomState(0).randint(0, 256, shape, dtype=np.uint8)
    channels_last = pixels if shape[-1] in (1, 2, 3, 4) else pixels.transpose(1, 2, 0)
    # PIL's own conversions are the oracle: gray to RGB, alpha dropped.
    gray_or_colour = channels_last[..., 0] if channels_last.shape[-1] == 1 else channels_last[..., :3]
    rgb = np.asarray(PIL.Image.fromarray(np.ascontiguousarray(gray_or_colour)).convert("RGB"))
    for image in (pixels, torch.from_numpy(pixels)):
        np.testing.assert_array_equal(np.asarray(image_processor.fetch_images(image)), rgb)


@pytest.mark.parametrize("shape", [(3, 20, 3), (1, 4, 1), (3, 6, 4), (1, 5, 2)])
def test_ambiguous_layouts_need_input_data_format(shape):
    image_processor = Self1EImageProcessor(size=TILE)
    pixels = np.random.RandomState(0).randint(0, 256, shape, dtype=np.uint8)
    for image in (pixels, torch.from_numpy(pixels)):
        with pytest.raises(ValueError, match=rf"^images has shape {re.escape(str(shape))}: its first and last axes"):
            image_processor(image)
        channels_last = image_processor(image, input_data_format="channels_last")
        assert channels_last["original_sizes"] == [[shape[0], shape[1]]]
        channels_first = image_processor(image, input_data_format="channels_first")
        assert channels_first["original_sizes"] == [[shape[1], shape[2]]]
    with pytest.raises(ValueError, match="input_data_format must be 'channels_first' or 'channels_last'"):
        image_processor(pixels, input_data_format="hwc")
    with pytest.raises(ValueError, match="input_data_format='channels_last' puts 7 channels on that axis"):
        image_processor(np.zeros((4, 4, 7), np.uint8), input_data_format="channels_last")


def test_max_image_pixels(tmp_path):
    image = PIL.Image.fromarray(random_rgb(40, 40))
    limited = Self1EImageProcessor(size=TILE, max_image_pixels=1000)
    with pytest.raises(ValueError, match=r"40x40 = 1600 pixels, more than max_image_pixels=1000"):
        limited(image)
    with pytest.raises(ValueError, match=r"max_image_pixels=1000"):  # checked from the file header
        limited(str(_png(tmp_path, image)))
    with pytest.raises(ValueError, match=r"max_image_pixels=1000"):  # per-call override
        Self1EImageProcessor(size=TILE)(image, max_image_pixels=1000)
    for path_or_image in (image, str(_png(tmp_path, image))):  # a per-call limit also applies when loading
        assert limited(path_or_image, max_image_pixels=None)["original_sizes"] == [[40, 40]]
        assert limited(path_or_image, max_image_pixels=2000)["original_sizes"] == [[40, 40]]
    assert Self1EImageProcessor(size=TILE, max_image_pixels=None)(image)["pixel_values"][0].shape == (3, TILE, TILE)
    assert Self1EImageProcessor().max_image_pixels == 50_000_000
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(ValueError, match=r"not an image PIL can read"):
        limited(str(not_an_image))


def test_truncated_files_are_refused_however_they_are_given(tmp_path):
    buffer = io.BytesIO()
    PIL.Image.fromarray(random_rgb(40, 52)).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    image_processor = Self1EImageProcessor(size=TILE)
    with pytest.raises(ValueError, match=r"^images: .*truncated.png.* cannot be decoded \(a truncated or corrupt"):
        image_processor(str(truncated))
    # PIL opens files lazily: the header reads fine and the pixels fail only when decoded.
    with pytest.raises(ValueError, match=r"^images\[1\]: .*truncated.png cannot be decoded"):
        image_processor([PIL.Image.fromarray(random_rgb(8, 8)), PIL.Image.open(truncated)])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_tiles": None}, TypeError, "Field 'max_tiles' expected int, got NoneType"),
        ({"min_tiles": False}, TypeError, "Field 'min_tiles' expected int, got bool"),
        ({"min_tiles": 0}, ValueError, "min_tiles must be a positive integer"),
        ({"do_resize": 0.5}, TypeError, "Field 'do_resize'"),
        ({"max_image_pixels": False}, TypeError, "Field 'max_image_pixels'"),
        ({"input_data_format": False}, TypeError, "Field 'input_data_format'"),
        ({"max_tiles": 257}, ValueError, "max_tiles=257 is more than the 256 tiles"),
    ],
)
def test_options_of_the_wrong_type_or_size_raise(kwargs, error, match):
    processor = make_processor()
    image = random_rgb(20, 30)
    with pytest.raises(error, match=match):
        processor.image_processor(image, **kwargs)
    with pytest.raises(error, match=match):
        processor.prepare_segmentation_inputs(image, "circle", **kwargs)
    with pytest.raises(error, match=match):
        processor(images=image, text="<image>circle", **kwargs)


def test_processor_call_refuses_an_empty_list_of_texts():
    with pytest.raises(ValueError, match="text is an empty list"):
        make_processor()(images=None, text=[])


# ----------------------------------------------------------------------------------------------------------
# Batching: processor(...), many prompts per image
# ----------------------------------------------------------------------------------------------------------


def test_processor_call_matches_prepare_segmentation_inputs():
    processor = make_processor(max_tiles=4)
    wide, small = PIL.Image.fromarray(random_rgb(112, 224)), PIL.Image.fromarray(random_rgb(40, 40))
    texts = [processor.render_segmentation_prompt("the red car"), processor.render_segmentation_prompt("a tiny dog")]
    called = processor(images=[wide, small], text=texts)
    prepared = processor.prepare_segmentation_inputs([wide, small], ["the red car", "a tiny dog"])
    for key in ("input_ids", "attention_mask", "pixel_values", "tile_grids", "num_tiles", "original_sizes"):
        torch.testing.assert_close(called[key], prepared[key])
    assert called["tile_grids"].tolist() == [[1, 2], [1, 1]]
    assert called["original_sizes"].tolist() == [[112, 224], [40, 40]]
    # Right padding with the pad token; the 2-tile prompt is the longer one.
    lengths = called["attention_mask"].sum(-1).tolist()
    assert lengths == [
        len(processor.tokenizer(expand_image(REFERENCE_PROMPT.replace("{text}", text), tiles))["input_ids"])
        for text, tiles in (("the red car", 2), ("a tiny dog", 1))
    ]
    assert lengths[0] > lengths[1]
    assert called["attention_mask"][1].tolist() == [1] * lengths[1] + [0] * (lengths[0] - lengths[1])
    assert set(called["input_ids"][1, lengths[1] :].tolist()) == {processor.tokenizer.pad_token_id}
    # The chat template path of ProcessorMixin gives the same ids and marks the answer for training labels.
    conversation = processor.build_segmentation_conversation("the red car", image=wide)
    templated = processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert templated["input_ids"][0].tolist() == called["input_ids"][0, : lengths[0]].tolist()
    mask = torch.as_tensor(templated["assistant_masks"][0]).bool()
    assert processor.tokenizer.decode(templated["input_ids"][0][mask]) == "[SEG].<|im_end|>"


def test_many_prompts_per_image_process_each_image_once():
    processor = make_processor(max_tiles=4)
    square, small = PIL.Image.fromarray(random_rgb(224, 224)), PIL.Image.fromarray(random_rgb(40, 56))
    inputs = processor.prepare_segmentation_inputs([square, small], [["the red car", "a dog"], "the sky"])
    assert inputs["pixel_values"].shape == (5, 3, TILE, TILE)  # 4 + 1 tiles, each image once
    assert inputs["tile_grids"].tolist() == [[2, 2], [1, 1]]
    assert inputs["prompt_to_image"].tolist() == [0, 0, 1]
    assert inputs["prompt_tile_indices"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    contexts = (inputs["input_ids"] == processor.image_token_id).sum(-1).tolist()
    assert contexts == [4 * TOKENS_PER_TILE, 4 * TOKENS_PER_TILE, TOKENS_PER_TILE]

    single = processor.prepare_segmentation_inputs(square, ["the red car", "a dog"])
    assert single["pixel_values"].shape == (4, 3, TILE, TILE)
    assert single["prompt_to_image"].tolist() == [0, 0]

    # Expanded per prompt, the inputs equal processing the image once per prompt.
    expanded = Self1EProcessor.expand_images_to_prompts(inputs)
    texts = [processor.render_segmentation_prompt(target) for target in ("the red car", "a dog", "the sky")]
    repeated = processor(images=[square, square, small], text=texts)
    for key in ("pixel_values", "tile_grids", "num_tiles", "original_sizes"):
        torch.testing.assert_close(expanded[key], repeated[key])
    torch.testing.assert_close(inputs["input_ids"], repeated["input_ids"])


def test_merged_inputs_equal_preparing_all_images_at_once():
    processor = make_processor(max_tiles=4)
    square, small = PIL.Image.fromarray(random_rgb(224, 224)), PIL.Image.fromarray(random_rgb(40, 56, seed=1))
    wide = PIL.Image.fromarray(random_rgb(112, 224, seed=2))
    prompts = [["the red car", "a dog"], "the sky on the left of the picture", ["a", "b", "c"]]
    together = processor.prepare_segmentation_inputs([square, small, wide], prompts)
    one_by_one = [
        processor.prepare_segmentation_inputs(image, entry) for image, entry in zip([square, small, wide], prompts)
    ]
    merged = processor.merge_segmentation_inputs(one_by_one)
    assert merged.keys() == together.keys()
    for key in together:
        assert torch.equal(merged[key], together[key]), key
    # The images' prompts differ in length, so merging had to pad them as the tokenizer does.
    assert len({batch["input_ids"].shape[1] for batch in one_by_one}) > 1
    with pytest.raises(ValueError, match="batches is empty"):
        processor.merge_segmentation_inputs([])


def test_inputs_drive_the_model_and_image_features_can_be_reused():
    from transformers_self1e.modeling import Self1EImageFeatures

    from transformers_self1e import Self1EForSegmentation
    from transformers_self1e.presets import tiny_config

    processor = make_processor(max_tiles=4)
    config = tiny_config(
        text_config={"vocab_size": len(processor.tokenizer)},
        image_token_id=processor.image_token_id,
        seg_token_id=processor.seg_token_id,
    )
    processor.check_model_config(config)
    torch.manual_seed(0)
    model = Self1EForSegmentation(config).eval()
    wide, small = PIL.Image.fromarray(random_rgb(112, 224)), PIL.Image.fromarray(random_rgb(40, 56))
    inputs = processor.prepare_segmentation_inputs([wide, small], [["the red car", "a dog"], "the sky"])
    expanded = Self1EProcessor.expand_images_to_prompts(inputs)
    text_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with torch.no_grad():
        plain = model(**text_inputs, pixel_values=expanded["pixel_values"], tile_grids=expanded["tile_grids"])
        features = model.get_segmentation_image_features(inputs["pixel_values"])
        tiles = inputs["prompt_tile_indices"]
        reused = model(
            **text_inputs,
            image_features=Self1EImageFeatures(
                projected_features=features.projected_features[tiles],
                high_res_features=features.high_res_features[tiles],
            ),
            tile_grids=expanded["tile_grids"],
        )
    assert [tuple(mask.shape) for mask in plain.pred_masks] == [(1, 16, 32), (1, 16, 32), (1, 16, 16)]
    for a, b in zip(plain.pred_masks, reused.pred_masks):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    masks = processor.post_process_masks(plain.pred_masks, expanded["original_sizes"])
    assert [tuple(mask.shape) for mask in masks] == [(1, 112, 224), (1, 112, 224), (1, 40, 56)]
    assert all(mask.dtype == torch.bool for mask in masks)


def test_post_process_masks():
    processor = make_processor()
    logits = [torch.tensor([[[-1.0, 1.0], [1.0, -1.0]]]), torch.zeros(0, 4, 4)]
    masks = processor.post_process_masks(logits, torch.tensor([[4, 6], [3, 3]]))
    assert masks[0].shape == (1, 4, 6) and masks[0].dtype == torch.bool
    assert masks[0][0, 0, 0].item() is False and masks[0][0, 0, -1].item() is True
    assert masks[1].shape == (0, 3, 3)
    resized = processor.post_process_masks(logits[:1], [(2, 2)], threshold=None)
    torch.testing.assert_close(resized[0], logits[0])
    with pytest.raises(ValueError, match="original_sizes has 1 entries"):
        processor.post_process_masks(logits, [(2, 2)])


def test_post_process_masks_refuses_non_finite_logits():
    logits = torch.tensor([[[-1.0, 1.0], [1.0, -1.0]], [[float("nan"), 1.0], [1.0, 1.0]]])
    with pytest.raises(ValueError, match="non-finite mask logits \\(NaN\\) for mask 1"):
        make_processor().post_process_masks([logits], [(4, 4)])


# ----------------------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    processor = make_processor(max_tiles=6, use_thumbnail=True)
    processor.save_pretrained(tmp_path)
    assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= {
        path.name for path in tmp_path.iterdir()
    }
    assert (tmp_path / "chat_template.jinja").read_text() == SELF1E_CHAT_TEMPLATE
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "Self1EProcessor" and saved["image_seq_length"] == TOKENS_PER_TILE
    assert saved["image_processor"]["image_processor_type"] == "Self1EImageProcessor"
    assert saved["image_processor"]["max_tiles"] == 6 and saved["image_processor"]["use_thumbnail"] is True
    # Importing transformers_self1e registers the classes, so the folder also loads as remote code.
    assert saved["auto_map"] == {"AutoProcessor": "processing_self1e.Self1EProcessor"}
    assert saved["image_processor"]["auto_map"]["AutoImageProcessor"] == "image_processing_self1e.Self1EImageProcessor"
    assert {"processing_self1e.py", "image_processing_self1e.py"} <= {path.name for path in tmp_path.iterdir()}

    loaded = Self1EProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded.image_processor, Self1EImageProcessor)
    assert loaded.token_ids == processor.token_ids
    assert loaded.image_seq_length == TOKENS_PER_TILE
    assert loaded.chat_template == loaded.tokenizer.chat_template == SELF1E_CHAT_TEMPLATE
    assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
    assert len(loaded.tokenizer) == len(processor.tokenizer)
    image = PIL.Image.fromarray(random_rgb(224, 300))
    expected = processor.prepare_segmentation_inputs(image, ["the red car", "a dog"], rng=1)
    actual = loaded.prepare_segmentation_inputs(image, ["the red car", "a dog"], rng=1)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key])
    assert Self1EImageProcessor.from_pretrained(tmp_path).to_dict() == processor.image_processor.to_dict()


def test_remote_code_files_import_only_allowed_packages():
    # The standard library, and what transformers needs anyway (huggingface_hub is a dependency of transformers).
    allowed = set(sys.stdlib_module_names) | {"torch", "transformers", "huggingface_hub", "numpy", "PIL"}
    for name in (
        "image_processing_self1e.py",
        "processing_self1e.py",
        "prompts_self1e.py",
        "predictor.py",
        "pipeline_self1e.py",
    ):
        tree = ast.parse((MODELING_DIR / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert {alias.name.split(".")[0] for alias in node.names} <= allowed, (name, ast.dump(node))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1 and "." not in (node.module or ""), (name, node.module)
                else:
                    assert node.module.split(".")[0] in allowed, (name, node.module)


@pytest.mark.slow
def test_auto_map_and_remote_code_loading(tmp_path, monkeypatch):
    processor = make_processor(max_tiles=4)
    # The package registers these classes on import; whatever this test sets is undone for the tests after it.
    monkeypatch.setattr(Self1EProcessor, "_auto_class", Self1EProcessor._auto_class)
    monkeypatch.setattr(Self1EImageProcessor, "_auto_class", Self1EImageProcessor._auto_class)
    Self1EProcessor.register_for_auto_class()
    Self1EImageProcessor.register_for_auto_class()
    processor.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing_self1e.Self1EProcessor"}
    assert saved["image_processor"]["auto_map"]["AutoImageProcessor"] == "image_processing_self1e.Self1EImageProcessor"
    assert (tmp_path / "saved" / "processing_self1e.py").is_file()
    assert (tmp_path / "saved" / "image_processing_self1e.py").is_file()

    image = PIL.Image.fromarray(random_rgb(224, 224))
    image.save(tmp_path / "image.png")
    expected = processor.prepare_segmentation_inputs(image, ["the red car", "a dog"])["input_ids"].tolist()
    # A fresh interpreter loading the saved folder's copy of the remote code (module cache in tmp_path).
    script = textwrap.dedent(
        f"""
        import json
        from transformers import AutoImageProcessor, AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True)
        image_processor = AutoImageProcessor.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True)
        inputs = processor.prepare_segmentation_inputs({str(tmp_path / "image.png")!r}, ["the red car", "a dog"])
        print(json.dumps({{
            "processor": type(processor).__module__ + "." + type(processor).__name__,
            "image_processor": type(image_processor).__module__ + "." + type(image_processor).__name__,
            "input_ids": inputs["input_ids"].tolist(),
            "tile_grids": inputs["tile_grids"].tolist(),
        }}))
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["processor"].startswith("transformers_modules.") and loaded["processor"].endswith(".Self1EProcessor")
    assert loaded["image_processor"].endswith("image_processing_self1e.Self1EImageProcessor")
    assert loaded["input_ids"] == expected
    assert loaded["tile_grids"] == [[2, 2]]
