"""LLaVA-style VQA loader: image placement, text-only items, roles, and labels on the answers once collated."""

import json

import PIL.Image
import pytest
from helpers.tokenizer import tiny_qwen2_tokenizer
from transformers_self1e.modeling.image_processing_self1e import Self1EImageProcessor
from transformers_self1e.modeling.processing_self1e import Self1EProcessor

from transformers_self1e.data import llava_to_conversation, load_llava_vqa
from transformers_self1e.training import IGNORE_INDEX, Self1EDataCollator

ITEMS = [
    {
        "id": "a",
        "image": "coco/1.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is on the table?"},
            {"from": "gpt", "value": "A cup."},
            {"from": "human", "value": "What colour is it?"},
            {"from": "gpt", "value": "Blue."},
        ],
    },
    {
        "id": "b",
        "image": "coco/2.jpg",
        "conversations": [
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "Describe the scene.\n<image>"},
            {"from": "gpt", "value": "A street."},
        ],
    },
    {"id": "c", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]},
]


@pytest.fixture
def llava_json(tmp_path):
    (tmp_path / "coco").mkdir()
    for name in ("1", "2"):
        PIL.Image.new("RGB", (40, 30)).save(tmp_path / "coco" / f"{name}.jpg")
    path = tmp_path / "llava_instruct.json"
    path.write_text(json.dumps(ITEMS))
    return path


def test_rows_put_the_image_first_in_the_first_user_turn(llava_json):
    dataset = load_llava_vqa(llava_json, image_dir=llava_json.parent)
    first, second, text_only = dataset
    assert first["conversation"] == [
        {
            "role": "user",
            "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is on the table?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A cup."}]},
        {"role": "user", "content": [{"type": "text", "text": "What colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
    ]
    # A leading answer is dropped, and a trailing placeholder moves to the front.
    assert [message["role"] for message in second["conversation"]] == ["user", "assistant"]
    assert second["conversation"][0]["content"][1]["text"] == "Describe the scene."
    assert second["image"].size == (40, 30)
    assert text_only["image"] is None
    assert text_only["conversation"][0]["content"] == [{"type": "text", "text": "Say hi."}]
    for row in dataset:
        assert row["task"] == "vqa" and row["source"] == "llava_instruct"
        assert row["masks"] == [] and row["expressions"] == [] and row["no_target"] is False


def test_collated_labels_are_the_answers(llava_json):
    processor = Self1EProcessor(Self1EImageProcessor(size=112), tiny_qwen2_tokenizer(), image_seq_length=16)
    batch = Self1EDataCollator(processor)(list(load_llava_vqa(llava_json, image_dir=llava_json.parent)))
    assert batch["pixel_values"].shape[0] == 2 and batch["tile_grids"].tolist() == [[1, 1], [1, 1]]
    labelled = [
        processor.tokenizer.decode(ids[labels != IGNORE_INDEX])
        for ids, labels in zip(batch["input_ids"], batch["labels"])
    ]
    assert labelled == ["A cup.<|im_end|>Blue.<|im_end|>", "A street.<|im_end|>", "Hi.<|im_end|>"]
    assert [tuple(masks.shape[:1]) for masks in batch["gt_masks"]] == [(0,), (0,), (0,)]


def test_unknown_speaker_raises():
    with pytest.raises(ValueError, match="unknown LLaVA speaker"):
        llava_to_conversation([{"from": "robot", "value": "beep"}], has_image=False)
