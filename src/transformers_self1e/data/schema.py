"""The one column schema every SELF1E training loader returns, so that datasets of all tasks concatenate and mix.

One row is one sequence the model reads: an image (or none), a conversation, and one mask per `[SEG]` token of the
assistant turns. Segmentation loaders emit one row per target (an image asked about three targets gives three rows, as
the reference training runs one conversation per target).

| column | feature | meaning |
| --- | --- | --- |
| `image` | `Image()` | the image, stored as its path and decoded lazily to PIL; `None` for text-only rows |
| `conversation` | list of `{role, content: [{type, text}]}` | chat messages; the image is a `{"type": "image"}` item at the start of the first user turn (its `text` is `None`) |
| `expressions` | list of string | the target of each mask: class name, referring expression or instruction; empty for VQA |
| `masks` | list of `{size: [height, width], counts}` | COCO compressed RLE of each mask, in `[SEG]` order, at the image's size; empty for VQA |
| `task` | string | one of `TASKS`: `"referring"`, `"semantic"`, `"reasoning"`, `"vqa"` |
| `source` | string | the dataset the row comes from, e.g. `"refcoco"`, `"ade20k"` |
| `no_target` | bool | the target is absent from the image, so its mask is all zero (gRefCOCO no-target expressions, negative classes) |

Segmentation prompts are drawn from the paper's training templates (Sec. 9.1) with a `random.Random` seeded by the
loader's seed and the image's key (`image_rng`): a row depends on neither the order of the files nor on other images.
"""

import random
from collections.abc import Mapping
from os import PathLike

from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature

from ..modeling.prompts_self1e import build_segmentation_conversation

TASKS = ("referring", "semantic", "reasoning", "vqa")


def self1e_features() -> Features:
    """The `datasets.Features` of the schema above."""
    return Features(
        {
            "image": ImageFeature(),
            "conversation": List(
                {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
            ),
            "expressions": List(Value("string")),
            "masks": List({"size": List(Value("int32"), length=2), "counts": Value("string")}),
            "task": Value("string"),
            "source": Value("string"),
            "no_target": Value("bool"),
        }
    )


def image_rng(seed: int, image_key: object) -> random.Random:
    """The random generator of one image's targets and prompts, fixed by `seed` and a key naming the image."""
    return random.Random(f"{seed}:{image_key}")


def segmentation_row(
    image: str | PathLike,
    target: str,
    mask: Mapping,
    task: str,
    source: str,
    rng: random.Random,
    prompt_type: str = "short",
    no_target: bool = False,
) -> dict:
    """One row asking for one target, with a random training question and answer (paper Sec. 9.1)."""
    return {
        "image": str(image),
        "conversation": build_segmentation_conversation(target, prompt_type=prompt_type, rng=rng),
        "expressions": [target],
        "masks": [dict(mask)],
        "task": task,
        "source": source,
        "no_target": no_target,
    }


def rows_to_dataset(rows: list[dict]) -> Dataset:
    """An in-memory `datasets.Dataset` of schema rows."""
    for row in rows:
        if row["task"] not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {row['task']!r}")
    features = self1e_features()
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


__all__ = ["TASKS", "image_rng", "rows_to_dataset", "segmentation_row", "self1e_features"]
