"""Prompts of SELF1E: the special tokens, the paper's question and answer families (Sec. 9) and the chat template
of the released checkpoints."""

import random

import numpy as np

IMAGE_PLACEHOLDER = "<image>"
IMAGE_START_TOKEN = "<img>"
IMAGE_END_TOKEN = "</img>"
IMAGE_CONTEXT_TOKEN = "<IMG_CONTEXT>"
SEG_TOKEN = "[SEG]"
CHAT_CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>")
# Strings a prompt may not contain: they would add image placeholders, image tokens or [SEG] tokens of their own.
RESERVED_IN_ANSWERS = (
    IMAGE_PLACEHOLDER,
    IMAGE_START_TOKEN,
    IMAGE_END_TOKEN,
    IMAGE_CONTEXT_TOKEN,
    *CHAT_CONTROL_TOKENS,
)
RESERVED_STRINGS = (*RESERVED_IN_ANSWERS, SEG_TOKEN)

DEFAULT_SYSTEM_MESSAGE = "You are an helpful assistant."

# Paper Sec. 9.1 (training): short questions for class names and referring expressions ...
SHORT_QUESTION_TEMPLATES = (
    "Can you segment the {text} in this image?",
    "Please segment the {text} in this image.",
    "What is {text} in this image? Please respond with segmentation mask.",
    "What is {text} in this image? Please output segmentation mask.",
)
# ... long questions for full-sentence instructions (reasoning segmentation) ...
LONG_QUESTION_TEMPLATES = (
    "{instruction} Please respond with segmentation mask.",
    "{instruction} Please output segmentation mask.",
)
# ... and the answers.
ANSWER_TEMPLATES = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)
# Paper Sec. 9.2 (validation), the prompts of the released checkpoints.
VALIDATION_SHORT_QUESTION = "What is {text} in this image? Please output segmentation mask."
VALIDATION_LONG_QUESTION = "{instruction} Please output segmentation mask."
VALIDATION_ANSWER = "[SEG]."
PROMPT_TYPES = ("short", "instruction")

# InternVL2.5-style template of the released checkpoints. An image item renders as "<image>\n" and a text item right
# after an image gets one leading space, so [image, "What is ... mask."] gives "<image>\n What is ... mask." as the
# reference. Assistant turns (and their <|im_end|>) are marked for `return_assistant_tokens_mask`.
SELF1E_CHAT_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}"
    "{%- set ns = namespace(after_image=false) -%}"
    "{%- for item in content -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}{%- set ns.after_image = true -%}"
    "{%- elif item['type'] == 'text' -%}"
    "{%- if ns.after_image -%}{{- ' ' + item['text'].lstrip() -}}{%- else -%}{{- item['text'] -}}{%- endif -%}"
    "{%- set ns.after_image = false -%}"
    "{%- else -%}{{- raise_exception('SELF1E chat template: unsupported content type ' + item['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_MESSAGE + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render_content(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- render_content(message['content']) + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def as_rng(rng: "random.Random | int | None") -> "random.Random | None":
    """`rng` as a `random.Random`: an int is a seed, `None` stays `None` (the validation prompts)."""
    if rng is None or isinstance(rng, random.Random):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return random.Random(int(rng))
    raise TypeError(f"rng must be a random.Random, an int seed or None, got {type(rng).__name__}")


def _check_free_text(text, name: str) -> str:
    """`text` if it is a non-empty string without reserved strings; `name` is its name in error messages."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name} is empty: a segmentation prompt needs a description of the target")
    for reserved in RESERVED_STRINGS:
        if reserved in text:
            raise ValueError(f"{name} contains the reserved string {reserved!r}, which only the processor may insert")
    return text


def build_question(
    target: str,
    prompt_type: str = "short",
    template: str | None = None,
    rng: "random.Random | int | None" = None,
    name: str = "prompt",
) -> str:
    r"""
    Builds the user question for one target (paper Sec. 9).

    Args:
        target (`str`):
            The class name or referring expression (`prompt_type="short"`), or the full-sentence instruction
            (`prompt_type="instruction"`).
        prompt_type (`str`, *optional*, defaults to `"short"`):
            `"short"` or `"instruction"`: which family of questions to ask with.
        template (`str`, *optional*):
            A custom question with a `{text}` or `{instruction}` placeholder. Defaults to the validation question, or
            a random one of the training family when `rng` is given.
        rng (`random.Random` or `int`, *optional*):
            Draws the question from the training family; `None` gives the validation question.
        name (`str`, *optional*, defaults to `"prompt"`):
            The name of `target` in error messages.

    Returns:
        `str`: the question.
    """
    target = _check_free_text(target, name).strip()
    rng = as_rng(rng)
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"prompt_type must be one of {PROMPT_TYPES}, got {prompt_type!r}")
    if template is None:
        if prompt_type == "short":
            template = VALIDATION_SHORT_QUESTION if rng is None else rng.choice(SHORT_QUESTION_TEMPLATES)
        else:
            template = VALIDATION_LONG_QUESTION if rng is None else rng.choice(LONG_QUESTION_TEMPLATES)
    else:
        if not isinstance(template, str) or ("{text}" not in template and "{instruction}" not in template):
            raise ValueError(
                f"question_template must contain a {{text}} or {{instruction}} placeholder, got {template!r}"
            )
        for reserved in RESERVED_STRINGS:
            if reserved in template:
                raise ValueError(f"question_template contains the reserved string {reserved!r}")
    # str.replace, not str.format: templates and targets may contain braces.
    return template.replace("{text}", target).replace("{instruction}", target)


def build_answer(template: str | None = None, rng: "random.Random | int | None" = None) -> str:
    r"""
    Builds the assistant answer.

    Args:
        template (`str`, *optional*):
            A custom answer, which must contain `[SEG]`. Defaults to the validation answer `"[SEG]."`, or a random
            one of the training family when `rng` is given.
        rng (`random.Random` or `int`, *optional*):
            Draws the answer from the training family.

    Returns:
        `str`: the answer.
    """
    rng = as_rng(rng)
    if template is None:
        return VALIDATION_ANSWER if rng is None else rng.choice(ANSWER_TEMPLATES)
    if not isinstance(template, str) or SEG_TOKEN not in template:
        raise ValueError(f"answer_template must contain {SEG_TOKEN}: the mask is read from it, got {template!r}")
    for reserved in RESERVED_IN_ANSWERS:
        if reserved in template:
            raise ValueError(f"answer_template contains the reserved string {reserved!r}")
    return template


def build_segmentation_conversation(
    target: str,
    prompt_type: str = "short",
    question_template: str | None = None,
    answer_template: str | None = None,
    rng: "random.Random | int | None" = None,
    image=None,
    name: str = "prompt",
) -> list[dict]:
    r"""
    Builds the two-turn conversation of one segmentation prompt (user: image and question; assistant: an answer with
    `[SEG]`) for the chat template.

    Args:
        target, prompt_type, question_template, rng, name:
            As in [`build_question`] (`question_template` is its `template`).
        answer_template (`str`, *optional*):
            As `template` in [`build_answer`].
        image (*optional*):
            Stored in the image item, for chat templates that take it; the processor needs none.

    Returns:
        `list[dict]`: the messages. With `rng`, the question and then the answer are drawn from the training
        families.
    """
    rng = as_rng(rng)
    question = build_question(target, prompt_type, question_template, rng, name=name)
    answer = build_answer(answer_template, rng)
    image_item = {"type": "image"} if image is None else {"type": "image", "image": image}
    return [
        {"role": "user", "content": [image_item, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


__all__ = [
    "ANSWER_TEMPLATES",
    "LONG_QUESTION_TEMPLATES",
    "SELF1E_CHAT_TEMPLATE",
    "SHORT_QUESTION_TEMPLATES",
    "build_answer",
    "build_question",
    "build_segmentation_conversation",
]
