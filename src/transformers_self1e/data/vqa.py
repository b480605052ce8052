"""Visual question answering in LLaVA's instruction-tuning JSON format (LLaVA-150k, LLaVA-665k, VQA conversions)."""

import json
from pathlib import Path

from datasets import Dataset

from .schema import rows_to_dataset

IMAGE_PLACEHOLDER = "<image>"
LLAVA_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def load_llava_vqa(json_file: str | Path, image_dir: str | Path, source: str | None = None) -> Dataset:
    """
    VQA rows (schema in `transformers_self1e.data.schema`) from a LLaVA-style JSON list of
    `{"image": <relative path, optional>, "conversations": [{"from": "human" | "gpt", "value": ...}, ...]}`.

    The `<image>` placeholder is removed from the text and the image is put at the start of the first user turn, as
    the reference training does; items without `image` are text-only rows. A conversation opening with a `gpt` turn
    loses that turn (it would be an answer to nothing).

    Args:
        image_dir: the folder the items' `image` paths are relative to.
        source: the `source` column; defaults to the JSON file's name without suffix.
    """
    json_file = Path(json_file)
    image_dir = Path(image_dir)
    rows = []
    for item in json.loads(json_file.read_text()):
        image = item.get("image")
        rows.append(
            {
                "image": None if image is None else str(image_dir / image),
                "conversation": llava_to_conversation(item["conversations"], has_image=image is not None),
                "expressions": [],
                "masks": [],
                "task": "vqa",
                "source": source or json_file.stem,
                "no_target": False,
            }
        )
    return rows_to_dataset(rows)


def llava_to_conversation(turns: list[dict], has_image: bool) -> list[dict]:
    """LLaVA `conversations` as chat messages, with one image item opening the first user turn when `has_image`."""
    if turns and turns[0]["from"] == "gpt":
        turns = turns[1:]
    messages = []
    for turn in turns:
        if turn["from"] not in LLAVA_ROLES:
            raise ValueError(f"unknown LLaVA speaker {turn['from']!r}; expected one of {sorted(LLAVA_ROLES)}")
        role = LLAVA_ROLES[turn["from"]]
        content = [{"type": "text", "text": turn["value"].replace(IMAGE_PLACEHOLDER, "").strip()}]
        if has_image and role == "user" and not any(message["role"] == "user" for message in messages):
            content.insert(0, {"type": "image"})
        messages.append({"role": role, "content": content})
    return messages


__all__ = ["llava_to_conversation", "load_llava_vqa"]
