"""Processor of SELF1E: InternVL tiling + a Qwen2.5 tokenizer + the chat template of the released checkpoints."""

import random

import numpy as np
import torch
from transformers import AddedToken
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .image_processing_self1e import Self1EImageProcessor, option_type_errors
from .prompts_self1e import (
    CHAT_CONTROL_TOKENS,
    IMAGE_CONTEXT_TOKEN,
    IMAGE_END_TOKEN,
    IMAGE_PLACEHOLDER,
    IMAGE_START_TOKEN,
    RESERVED_IN_ANSWERS,
    RESERVED_STRINGS,
    SEG_TOKEN,
    SELF1E_CHAT_TEMPLATE,
    as_rng,
    build_answer,
    build_question,
    build_segmentation_conversation,
)

logger = logging.get_logger(__name__)


class Self1EProcessor(ProcessorMixin):
    r"""
    SELF1E processor: [`Self1EImageProcessor`] (InternVL tiling) and a Qwen2.5 tokenizer, plus the chat template of the
    released checkpoints. Prompts carry an `<image>` placeholder per image, which becomes `<img>` +
    `<IMG_CONTEXT>` x (`image_seq_length` x tiles) + `</img>`; the `[SEG]` token in the assistant answer is the one
    whose preceding hidden state is turned into a mask.

    On construction the tokenizer gets the tokens `<img>`, `</img>`, `<IMG_CONTEXT>` (special) and `[SEG]` (an added,
    non-special token, as LISA: it stays visible in decoded text) when it does not have them yet, and the processor's
    chat template (so `tokenizer.apply_chat_template` renders the same prompts). Check a model config against the
    tokenizer with [`~Self1EProcessor.check_model_config`].

    Args:
        image_processor ([`Self1EImageProcessor`]): the image processor.
        tokenizer ([`PreTrainedTokenizerBase`]): the language model's tokenizer (modified in place, see above).
        image_seq_length (`int`, *optional*, defaults to 256): language-model image tokens per tile
            (`config.image_tokens_per_tile`: 256 for 448-px tiles, 16 for the 112-px test models).
        chat_template (`str`, *optional*): Jinja chat template; defaults to `SELF1E_CHAT_TEMPLATE`.
    """

    text_kwargs = {"padding": True, "padding_side": "right", "return_tensors": "pt"}
    images_kwargs = {"return_tensors": "pt"}

    def __init__(
        self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kwargs
    ):
        if chat_template is None:
            chat_template = SELF1E_CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        if isinstance(image_seq_length, bool) or not isinstance(image_seq_length, int) or image_seq_length < 1:
            raise ValueError(f"image_seq_length must be a positive integer, got {image_seq_length!r}")
        self.image_seq_length = image_seq_length
        # Without its vocabulary files a tokenizer still loads, holding its special tokens only: say so now rather
        # than as a disagreement about <IMG_CONTEXT> later.
        if len(tokenizer.get_vocab()) <= len(tokenizer.get_added_vocab()):
            raise ValueError(
                f"the tokenizer of {tokenizer.name_or_path or 'this processor'} has no vocabulary, only its added "
                "tokens: tokenizer.json (or vocab.json and merges.txt) is missing"
            )
        _add_self1e_tokens(tokenizer)
        # One template for both entry points (processor and tokenizer), saved as chat_template.jinja.
        tokenizer.chat_template = self.chat_template

        self.image_token = IMAGE_PLACEHOLDER
        self.start_image_token = IMAGE_START_TOKEN
        self.end_image_token = IMAGE_END_TOKEN
        self.context_image_token = IMAGE_CONTEXT_TOKEN
        self.seg_token = SEG_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN)
        self.start_image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_START_TOKEN)
        self.end_image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_END_TOKEN)
        self.seg_token_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)

    @classmethod
    def from_model_config(cls, config, tokenizer, chat_template=None, **image_processor_kwargs) -> "Self1EProcessor":
        """A processor whose tile size and image tokens per tile follow a `Self1EConfig`."""
        image_processor = Self1EImageProcessor.from_model_config(config, **image_processor_kwargs)
        return cls(
            image_processor, tokenizer, image_seq_length=int(config.image_tokens_per_tile), chat_template=chat_template
        )

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # transformers < 5.25 loads the sub-processors here (later versions resolve them from processor_config.json):
        # the image processor class is this module's, so loading works without registering it with AutoImageProcessor.
        subfolder = kwargs.pop("subfolder", "")
        image_processor = Self1EImageProcessor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        tokenizer = cls._load_tokenizer_from_pretrained(
            "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        return [image_processor, tokenizer]

    # ----------------------------------------------------------------------------------------------------------
    # Token ids and model config
    # ----------------------------------------------------------------------------------------------------------

    @property
    def token_ids(self) -> dict[str, int]:
        """Ids of the SELF1E tokens in the tokenizer."""
        return {
            "image_start_token_id": self.start_image_token_id,
            "image_end_token_id": self.end_image_token_id,
            "image_token_id": self.image_token_id,
            "seg_token_id": self.seg_token_id,
        }

    @property
    def image_token_ids(self) -> list[int]:
        return [self.image_token_id, self.start_image_token_id, self.end_image_token_id]

    def check_model_config(self, config, raise_error: bool = True) -> list[str]:
        """
        Checks a `Self1EConfig` against this processor: `image_token_id` (`<IMG_CONTEXT>`), `seg_token_id` (`[SEG]`),
        image tokens per tile, tile size, and that the text vocabulary covers the tokenizer. Returns the mismatches
        (empty when all agree) or, with `raise_error=True`, raises a `ValueError` listing them.
        """
        problems = []
        if getattr(config, "image_token_id", None) != self.image_token_id:
            problems.append(
                f"config.image_token_id={getattr(config, 'image_token_id', None)} but the tokenizer's "
                f"{IMAGE_CONTEXT_TOKEN} is {self.image_token_id}"
            )
        if getattr(config, "seg_token_id", None) != self.seg_token_id:
            problems.append(
                f"config.seg_token_id={getattr(config, 'seg_token_id', None)} but the tokenizer's {SEG_TOKEN} is "
                f"{self.seg_token_id}"
            )
        tokens_per_tile = getattr(config, "image_tokens_per_tile", None)
        if tokens_per_tile is not None and tokens_per_tile != self.image_seq_length:
            problems.append(
                f"config.image_tokens_per_tile={tokens_per_tile} but "
                f"processor.image_seq_length={self.image_seq_length}"
            )
        tile_size = getattr(config, "tile_size", None)
        size = self.image_processor.size
        if tile_size is not None and (size.height, size.width) != (tile_size, tile_size):
            problems.append(
                f"config.tile_size={tile_size} but the image processor's size is {size.height}x{size.width}"
            )
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        vocab_size = getattr(text_config, "vocab_size", None)
        if vocab_size is not None and vocab_size < len(self.tokenizer):
            problems.append(
                f"the text vocabulary ({vocab_size}) is smaller than the tokenizer ({len(self.tokenizer)} tokens): "
                "resize the token embeddings"
            )
        if problems and raise_error:
            raise ValueError("model config and processor disagree:\n- " + "\n- ".join(problems))
        return problems

    # ----------------------------------------------------------------------------------------------------------
    # ProcessorMixin.__call__ and its hooks
    # ----------------------------------------------------------------------------------------------------------

    def __call__(self, images=None, text=None, **kwargs) -> BatchFeature:
        """
        transformers' processor call: `text` holds an `<image>` placeholder per image (see
        [`~Self1EProcessor.prepare_segmentation_inputs`] for segmentation prompts built for you). An empty list of
        texts raises a `ValueError`, an option of the wrong type a `TypeError` naming it.
        """
        if isinstance(text, (list, tuple)) and not text:
            raise ValueError("text is an empty list; pass a text or a list of texts")
        with option_type_errors():
            return super().__call__(images=images, text=text, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        num_tiles = int(image_inputs["num_tiles"][image_idx])
        return f"{IMAGE_START_TOKEN}{IMAGE_CONTEXT_TOKEN * (self.image_seq_length * num_tiles)}{IMAGE_END_TOKEN}"

    def _check_special_mm_tokens(self, text: list[str], text_inputs, modalities: list[str]):
        # The placeholder (<image>) is not the token the ids hold (<IMG_CONTEXT>): compare context tokens instead.
        input_ids = text_inputs["input_ids"]
        input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        id_counts = [list(ids).count(self.image_token_id) for ids in input_ids]
        text_counts = [sample.count(IMAGE_CONTEXT_TOKEN) for sample in text]
        if id_counts != text_counts:
            raise ValueError(
                f"{IMAGE_CONTEXT_TOKEN} tokens in the text ({text_counts}) and in input_ids ({id_counts}) differ, "
                "most likely because of truncation: disable truncation or raise max_length"
            )

    # ----------------------------------------------------------------------------------------------------------
    # Segmentation prompts
    # ----------------------------------------------------------------------------------------------------------

    def build_segmentation_conversation(self, target: str, **kwargs) -> list[dict]:
        """See [`build_segmentation_conversation`]: `prompt_type`, `question_template`, `answer_template`, `rng`,
        `image`."""
        return build_segmentation_conversation(target, **kwargs)

    def render_segmentation_prompt(self, target: str, chat_template: str | None = None, **kwargs) -> str:
        """The chat-template text of one segmentation prompt, with the `<image>` placeholder not yet expanded."""
        conversation = build_segmentation_conversation(target, **kwargs)
        return self.apply_chat_template(conversation, chat_template=chat_template, tokenize=False)

    def render_chat_prompt(self, question: str) -> str:
        """The chat-template text asking `question` about one image (its `<image>` placeholder not yet expanded),
        ending where the assistant's answer starts, for `generate`."""
        if not isinstance(question, str):
            raise TypeError(f"question must be a string, got {type(question).__name__}")
        if not question.strip():
            raise ValueError("question is empty")
        _check_utf8(question, "question")
        for token in RESERVED_STRINGS:
            if token in question:
                raise ValueError(
                    f"question contains the reserved string {token!r}, which only the processor may insert"
                )
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def prepare_segmentation_inputs(
        self,
        images,
        prompts,
        prompt_type: str = "short",
        question_template: str | None = None,
        answer_template: str | None = None,
        rng: "random.Random | int | None" = None,
        chat_template: str | None = None,
        return_tensors: str | None = "pt",
        padding_side: str = "right",
        **images_kwargs,
    ) -> BatchFeature:
        """
        Model inputs for segmentation prompts, processing every image once.

        Args:
            images: one image with `prompts` a string or a list of strings (all on that image), or a list of images
                with `prompts` a list of the same length whose entries are a string or a list of strings.
            prompts: targets (class names / referring expressions for `prompt_type="short"`, full-sentence
                instructions for `prompt_type="instruction"`), rendered with the validation templates, custom
                `question_template`/`answer_template`, or random training templates drawn from `rng`. A prompt may
                also be a whole conversation (list of `{"role", "content"}` messages) with one `{"type": "image"}`
                item and `[SEG]` in its assistant part; it is rendered as is.
            chat_template: a custom Jinja template; the rendered prompt must keep the image and the `[SEG]` answer.
            images_kwargs: overrides of the image processor (`min_tiles`, `max_tiles`, `use_thumbnail`, ...).

        Returns:
            [`BatchFeature`] with one row per prompt (in image order, then prompt order):

            - `input_ids`, `attention_mask` `(num_prompts, length)`, padded on `padding_side`.
            - `pixel_values` `(num_tiles, 3, S, S)`: the tiles of each image **once**, images in order.
            - `tile_grids` `(num_images, 2)` (rows, cols), `num_tiles` `(num_images,)` (thumbnail included),
              `has_thumbnail` `(num_images,)`, `original_sizes` `(num_images, 2)` (height, width).
            - `prompt_to_image` `(num_prompts,)`: the image of each prompt.
            - `sample_tile_indices` `(sum of the prompts' tiles,)`: rows of `pixel_values` (or of image features
              computed once from it) that give each prompt's tiles in batch order, i.e. the tiles its image tokens
              stand for. See [`~Self1EProcessor.expand_images_to_prompts`].
        """
        rng = as_rng(rng)
        batch_shape = None
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            batch_shape = tuple(images.shape)
            images = list(images)
        if isinstance(images, (list, tuple)):
            if not isinstance(prompts, (list, tuple)) or is_conversation(prompts) or len(prompts) != len(images):
                given = f"a list of {len(images)} images"
                if batch_shape is not None:
                    given = f"a batch of {len(images)} images (images has shape {batch_shape})"
                raise ValueError(
                    f"prompts: with {given}, pass a list of {len(images)} entries (a prompt or a list of prompts per "
                    f"image), got {type(prompts).__name__}"
                    + (f" of length {len(prompts)}" if isinstance(prompts, (list, tuple)) else "")
                )
            image_list, entries = list(images), [(entry, f"prompts[{index}]") for index, entry in enumerate(prompts)]
        else:
            image_list, entries = [images], [(prompts, "prompts")]
        if not image_list:
            raise ValueError("images is empty")
        # Per image: (prompt, argument name for error messages); a prompt is a target string or a conversation.
        prompts_per_image = []
        for entry, name in entries:
            if isinstance(entry, str) or is_conversation(entry):
                prompts_per_image.append([(entry, name)])
            elif isinstance(entry, (list, tuple)):
                if not entry:
                    raise ValueError(f"{name} is empty: every image needs at least one prompt")
                prompts_per_image.append([(prompt, f"{name}[{index}]") for index, prompt in enumerate(entry)])
            else:
                raise TypeError(
                    f"{name} must be a string, a conversation or a list of them, got {type(entry).__name__}"
                )
        # Fail on bad prompts before the (slower) image processing.
        for prompts_of_image in prompts_per_image:
            for prompt, name in prompts_of_image:
                if is_conversation(prompt):
                    _check_conversation(prompt, name)
                else:
                    build_question(prompt, prompt_type, question_template, name=name)
                    _check_utf8(prompt, name)
        build_answer(answer_template)
        for template, name in ((question_template, "question_template"), (answer_template, "answer_template")):
            if template is not None:
                _check_utf8(template, name)

        image_inputs = self.image_processor(image_list, return_tensors=return_tensors, **images_kwargs)
        num_tiles = [int(count) for count in image_inputs["num_tiles"]]
        if len(num_tiles) != len(image_list):
            raise ValueError(f"images holds {len(num_tiles)} images but prompts were given for {len(image_list)}")

        texts, replacements, prompt_to_image, sample_tile_indices = [], [], [], []
        tile_offsets = np.concatenate([[0], np.cumsum(num_tiles)]).tolist()
        for image_index, prompts_of_image in enumerate(prompts_per_image):
            for prompt, name in prompts_of_image:
                if is_conversation(prompt):
                    conversation = prompt
                else:
                    conversation = build_segmentation_conversation(
                        prompt, prompt_type, question_template, answer_template, rng, name=name
                    )
                text = self.apply_chat_template(conversation, chat_template=chat_template, tokenize=False)
                if text.count(IMAGE_PLACEHOLDER) != 1:
                    raise ValueError(
                        f"chat_template must render exactly one {IMAGE_PLACEHOLDER} per prompt, got "
                        f"{text.count(IMAGE_PLACEHOLDER)} for {name}"
                    )
                answers = _assistant_texts(conversation)
                if text.count(SEG_TOKEN) != sum(answer.count(SEG_TOKEN) for answer in answers) or not all(
                    answer in text for answer in answers
                ):
                    raise ValueError(
                        f"chat_template must render the assistant answers with their {SEG_TOKEN} tokens ({answers!r}) "
                        f"for {name}"
                    )
                texts.append(text)
                replacements.append(self.replace_image_token(image_inputs, image_index))
                prompt_to_image.append(image_index)
                sample_tile_indices.extend(range(tile_offsets[image_index], tile_offsets[image_index + 1]))

        texts, _ = self.get_text_with_replacements(texts, images_replacements=replacements)
        text_inputs = self.tokenizer(texts, padding=True, padding_side=padding_side, return_tensors=return_tensors)
        self._check_special_mm_tokens(texts, text_inputs, ["image"])
        data = {
            **text_inputs,
            **image_inputs,
            "prompt_to_image": prompt_to_image,
            "sample_tile_indices": sample_tile_indices,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def expand_images_to_prompts(inputs) -> dict:
        """
        From [`~Self1EProcessor.prepare_segmentation_inputs`] output, the per-prompt image inputs for a plain forward
        pass (the vision tower then runs once per prompt): `pixel_values` (tiles repeated per prompt), `tile_grids`,
        `num_tiles`, `has_thumbnail` and `original_sizes` with one row per prompt. To run the vision tower once per
        image instead, index the image features computed from `inputs["pixel_values"]` with
        `inputs["sample_tile_indices"]`.
        """
        prompt_to_image = torch.as_tensor(inputs["prompt_to_image"], dtype=torch.long)
        tile_indices = torch.as_tensor(inputs["sample_tile_indices"], dtype=torch.long)
        expanded = {"pixel_values": torch.as_tensor(inputs["pixel_values"])[tile_indices]}
        for key in ("tile_grids", "num_tiles", "has_thumbnail", "original_sizes"):
            if key in inputs:
                expanded[key] = torch.as_tensor(inputs[key])[prompt_to_image]
        return expanded

    def post_process_masks(self, pred_masks, original_sizes, threshold: float | None = 0.0):
        """See [`Self1EImageProcessor.post_process_masks`]."""
        return self.image_processor.post_process_masks(pred_masks, original_sizes, threshold=threshold)


def is_conversation(prompt) -> bool:
    return (
        isinstance(prompt, (list, tuple))
        and len(prompt) > 0
        and all(isinstance(message, dict) and "role" in message for message in prompt)
    )


def _message_items(message: dict) -> list[dict]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, (list, tuple)) and all(isinstance(item, dict) and "type" in item for item in content):
        return list(content)
    raise ValueError(f"message content must be a string or a list of {{'type': ...}} items, got {content!r}")


def _assistant_texts(conversation: list[dict]) -> list[str]:
    return [
        item.get("text", "")
        for message in conversation
        if message["role"] == "assistant"
        for item in _message_items(message)
        if item["type"] == "text"
    ]


def _check_conversation(conversation: list[dict], name: str) -> None:
    """A conversation given as a prompt: one image item, [SEG] in the assistant part only, no reserved strings."""
    n_images = 0
    for index, message in enumerate(conversation):
        role = message["role"]
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"{name}[{index}] has role {role!r}; expected system, user or assistant")
        try:
            items = _message_items(message)
        except ValueError as error:
            raise ValueError(f"{name}[{index}]: {error}") from None
        for item in items:
            if item["type"] == "image":
                n_images += 1
            elif item["type"] == "text":
                text = item.get("text")
                if not isinstance(text, str):
                    raise TypeError(f"{name}[{index}] has a text item without a string 'text'")
                _check_utf8(text, f"{name}[{index}]")
                reserved = RESERVED_IN_ANSWERS if role == "assistant" else RESERVED_STRINGS
                for token in reserved:
                    if token in text:
                        raise ValueError(f"{name}[{index}] contains the reserved string {token!r}")
            else:
                raise ValueError(f"{name}[{index}] has an unsupported content item of type {item['type']!r}")
    if n_images != 1:
        raise ValueError(f"{name} must hold exactly one image item (the processor inserts the image), got {n_images}")
    if not any(SEG_TOKEN in text for text in _assistant_texts(conversation)):
        raise ValueError(f"{name}: the assistant part must contain {SEG_TOKEN}, from which the mask is read")
    user_text = " ".join(
        item.get("text", "")
        for message in conversation
        if message["role"] != "assistant"
        for item in _message_items(message)
        if item["type"] == "text"
    )
    if not user_text.strip():
        raise ValueError(f"{name} is empty: the user part needs a description of the target")


def _check_utf8(text: str, name: str) -> None:
    """The tokenizer reads UTF-8: a lone surrogate (e.g. from text decoded with `surrogateescape`) cannot be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{name} cannot be encoded as UTF-8 ({error.reason}: {text[error.start : error.end]!r} at position "
            f"{error.start})"
        ) from None


def _add_self1e_tokens(tokenizer) -> None:
    """Adds `<img>`, `</img>`, `<IMG_CONTEXT>` (special) and `[SEG]` where the tokenizer lacks them as one token."""

    def is_single_token(token: str) -> bool:
        return token in tokenizer.get_vocab() and len(tokenizer.encode(token, add_special_tokens=False)) == 1

    for token, special in (
        (IMAGE_START_TOKEN, True),
        (IMAGE_END_TOKEN, True),
        (IMAGE_CONTEXT_TOKEN, True),
        (SEG_TOKEN, False),
    ):
        if not is_single_token(token):
            tokenizer.add_tokens([AddedToken(token, special=special, normalized=False)])
            if not is_single_token(token):
                raise ValueError(f"could not add {token!r} to the tokenizer as a single token")
    for token in CHAT_CONTROL_TOKENS:
        if not is_single_token(token):
            logger.warning_once(
                f"the tokenizer has no {token!r} token: the SELF1E chat template will be split into ordinary tokens"
            )


__all__ = ["Self1EProcessor", "is_conversation"]
