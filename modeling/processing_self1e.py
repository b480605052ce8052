"""Processor of SELF1E: InternVL tiling + a Qwen2.5 tokenizer + the chat template of the released checkpoints."""

import random
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F
from transformers import AddedToken
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .image_processing_self1e import Self1EImageProcessor, option_type_errors
from .mask_postprocessing import (
    DEFAULT_MAX_CHUNK_BYTES,
    MaskPrediction,
    logits_to_prediction,
    logits_to_semantic_prediction,
)
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
        if len(tokenizer) <= len(tokenizer.get_added_vocab()):
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
        """Ids of `<IMG_CONTEXT>`, `<img>` and `</img>`."""
        return [self.image_token_id, self.start_image_token_id, self.end_image_token_id]

    def check_model_config(self, config, raise_error: bool = True) -> list[str]:
        r"""
        Checks a model config against this processor: `image_token_id` (`<IMG_CONTEXT>`), `seg_token_id` (`[SEG]`),
        image tokens per tile, tile size, and that the text vocabulary covers the tokenizer.

        Args:
            config ([`Self1EConfig`]):
                The model's config.
            raise_error (`bool`, *optional*, defaults to `True`):
                Raise a `ValueError` listing the mismatches, if any.

        Returns:
            `list[str]`: the mismatches, empty when all agree.
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
        r"""
        transformers' processor call, for prompts already rendered (see
        [`~Self1EProcessor.prepare_segmentation_inputs`] for segmentation prompts built for you).

        Args:
            images (`ImageInput` or `list[ImageInput]`, *optional*):
                The images, one per `<image>` placeholder of `text`.
            text (`str` or `list[str]`, *optional*):
                The rendered prompts, each `<image>` placeholder expanded into its image's tokens.
            kwargs:
                Options of the tokenizer and of [`Self1EImageProcessor`].

        Returns:
            [`BatchFeature`]: `input_ids`, `attention_mask` and the image processor's fields.

        Raises:
            `ValueError` for an empty list of texts, `TypeError` naming an option of the wrong type.
        """
        if isinstance(text, (list, tuple)) and not text:
            raise ValueError("text is an empty list; pass a text or a list of texts")
        with option_type_errors():
            return super().__call__(images=images, text=text, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        """The tokens image `image_idx` stands for: `<img>`, `image_seq_length` `<IMG_CONTEXT>` per tile, `</img>`."""
        num_tiles = int(image_inputs["num_tiles"][image_idx])
        return f"{IMAGE_START_TOKEN}{IMAGE_CONTEXT_TOKEN * (self.image_seq_length * num_tiles)}{IMAGE_END_TOKEN}"

    def _check_special_mm_tokens(self, text: list[str], text_inputs, modalities: list[str]):
        # The placeholder (<image>) is not the token the ids hold (<IMG_CONTEXT>): compare context tokens instead.
        input_ids = text_inputs["input_ids"]
        input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        id_counts = [list(ids).count(self.image_token_id) for ids in input_ids]
        text_counts = [row_text.count(IMAGE_CONTEXT_TOKEN) for row_text in text]
        if id_counts != text_counts:
            raise ValueError(
                f"{IMAGE_CONTEXT_TOKEN} tokens in the text ({text_counts}) and in input_ids ({id_counts}) differ, "
                "most likely because of truncation: disable truncation or raise max_length"
            )

    # ----------------------------------------------------------------------------------------------------------
    # Segmentation prompts
    # ----------------------------------------------------------------------------------------------------------

    def build_segmentation_conversation(self, target: str, **kwargs) -> list[dict]:
        """The conversation of one segmentation prompt: see [`build_segmentation_conversation`] for `kwargs`
        (`prompt_type`, `question_template`, `answer_template`, `rng`, `image`)."""
        return build_segmentation_conversation(target, **kwargs)

    def render_segmentation_prompt(self, target: str, chat_template: str | None = None, **kwargs) -> str:
        """The chat-template text of one segmentation prompt, with the `<image>` placeholder not yet expanded; `kwargs`
        as in [`~Self1EProcessor.build_segmentation_conversation`]."""
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
        r"""
        Prepares segmentation prompts about one or several images for the model, processing every image once. The
        prompts are checked first, then the images are tiled, the prompts rendered with the chat template and
        tokenized.

        Args:
            images (`ImageInput` or `list[ImageInput]`):
                One image (PIL image, array, tensor or path), or a list of them (a 4-D array or tensor is a list of
                images).
            prompts (`str`, `list[dict]`, or a list of them):
                For one image, a prompt or a list of prompts about it; for a list of images, a list with one entry
                (a prompt or a list of prompts) per image. A prompt is a target: a class name or referring expression
                (`prompt_type="short"`) or a full-sentence instruction (`prompt_type="instruction"`); or a whole
                conversation (a list of `{"role", "content"}` messages) with one `{"type": "image"}` item and `[SEG]`
                in its assistant part, rendered as is. A string is always one prompt.
            prompt_type (`str`, *optional*, defaults to `"short"`):
                `"short"` or `"instruction"`: which family of questions a target is asked with (paper Sec. 9).
            question_template (`str`, *optional*):
                A question with a `{text}` or `{instruction}` placeholder, instead of the validation question.
            answer_template (`str`, *optional*):
                An answer containing `[SEG]`, instead of `"[SEG]."`.
            rng (`random.Random` or `int`, *optional*):
                Draws the questions and answers from the training families instead of the validation prompts.
            chat_template (`str`, *optional*):
                A Jinja template instead of the processor's; it must render the image once and the `[SEG]` answer.
            return_tensors (`str`, *optional*, defaults to `"pt"`):
                The tensor type of the returned arrays.
            padding_side (`str`, *optional*, defaults to `"right"`):
                Which side of the text is padded.
            images_kwargs:
                Options of [`Self1EImageProcessor`] (`min_tiles`, `max_tiles`, `use_thumbnail`, `max_image_pixels`,
                `input_data_format`, ...).

        Returns:
            [`BatchFeature`]: one row per prompt, image by image, with the fields

            - **input_ids**, **attention_mask** -- `(num_prompts, length)`, padded on `padding_side`.
            - **pixel_values** -- `(num_tiles, 3, tile_size, tile_size)`: the tiles of each image **once**, images in
              order.
            - **tile_grids** -- `(num_images, 2)` tile rows and columns; **num_tiles** -- `(num_images,)`, thumbnail
              included; **has_thumbnail** -- `(num_images,)`; **original_sizes** -- `(num_images, 2)` (height,
              width).
            - **prompt_to_image** -- `(num_prompts,)`: the image each prompt asks about.
            - **prompt_tile_indices** -- `(sum of the prompts' tiles,)`: the rows of `pixel_values` (or of image
              features computed once from it) that give each prompt's tiles in prompt order. See
              [`~Self1EProcessor.expand_images_to_prompts`].

        Raises:
            `TypeError` or `ValueError` naming the bad argument (`prompts[1][0]`, ...), before any image is tiled.
        """
        rng = as_rng(rng)
        image_list, prompts_per_image = _pair_images_with_prompts(images, prompts)
        template_options = {
            "prompt_type": prompt_type,
            "question_template": question_template,
            "answer_template": answer_template,
        }
        _check_prompts(prompts_per_image, **template_options)
        image_inputs = self.image_processor(image_list, return_tensors=return_tensors, **images_kwargs)
        num_tiles = [int(count) for count in image_inputs["num_tiles"]]
        if len(num_tiles) != len(image_list):
            raise ValueError(f"images holds {len(num_tiles)} images but prompts were given for {len(image_list)}")
        texts = self._render_prompts(prompts_per_image, chat_template, rng=rng, **template_options)
        prompt_to_image = [image for image, image_prompts in enumerate(prompts_per_image) for _ in image_prompts]
        text_inputs = self._tokenize_prompts(texts, prompt_to_image, image_inputs, padding_side, return_tensors)
        data = {
            **text_inputs,
            **image_inputs,
            "prompt_to_image": prompt_to_image,
            "prompt_tile_indices": _prompt_tile_indices(num_tiles, prompt_to_image),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _render_prompts(
        self, prompts_per_image: list[list["NamedPrompt"]], chat_template: str | None, **template_options
    ) -> list[str]:
        """The chat-template text of every prompt, image by image, `<image>` placeholders not yet expanded."""
        texts = []
        for image_prompts in prompts_per_image:
            for prompt, name in image_prompts:
                if is_conversation(prompt):
                    conversation = prompt
                else:
                    conversation = build_segmentation_conversation(prompt, name=name, **template_options)
                text = self.apply_chat_template(conversation, chat_template=chat_template, tokenize=False)
                _check_rendered_prompt(text, conversation, name)
                texts.append(text)
        return texts

    def _tokenize_prompts(
        self,
        texts: list[str],
        prompt_to_image: list[int],
        image_inputs: BatchFeature,
        padding_side: str,
        return_tensors: str | None,
    ) -> BatchFeature:
        """Expands each prompt's `<image>` placeholder into its image's tokens and tokenizes the prompts."""
        replacements = [self.replace_image_token(image_inputs, image) for image in prompt_to_image]
        texts, _ = self.get_text_with_replacements(texts, images_replacements=replacements)
        text_inputs = self.tokenizer(texts, padding=True, padding_side=padding_side, return_tensors=return_tensors)
        self._check_special_mm_tokens(texts, text_inputs, ["image"])
        return text_inputs

    def merge_segmentation_inputs(self, batches: Sequence[Mapping], padding_side: str = "right") -> BatchFeature:
        r"""
        Merges the outputs of several [`~Self1EProcessor.prepare_segmentation_inputs`] calls (e.g. one per image, as
        the pipeline prepares them) into the inputs one call on all their images and prompts gives.

        Args:
            batches (`Sequence[Mapping]`):
                Prepared inputs with PyTorch tensors, each padded on `padding_side`.
            padding_side (`str`, *optional*, defaults to `"right"`):
                Which side of the text the inputs are padded on, and the merged text is padded on.

        Returns:
            [`BatchFeature`]: the fields of [`~Self1EProcessor.prepare_segmentation_inputs`], the images and prompts
            of `batches` in order.
        """
        if not batches:
            raise ValueError("batches is empty: pass the prepared inputs of at least one image")
        length = max(batch["input_ids"].shape[1] for batch in batches)
        pad_token_id = self.tokenizer.pad_token_id or 0
        merged = {
            "input_ids": _pad_and_concatenate(
                [batch["input_ids"] for batch in batches], length, pad_token_id, padding_side
            ),
            "attention_mask": _pad_and_concatenate(
                [batch["attention_mask"] for batch in batches], length, 0, padding_side
            ),
        }
        for key in ("pixel_values", "tile_grids", "num_tiles", "has_thumbnail", "original_sizes"):
            merged[key] = torch.cat([batch[key] for batch in batches])
        # Image and tile indices start at 0 in every batch: shift them past the images and tiles of the batches before.
        images_before = np.cumsum([0] + [len(batch["num_tiles"]) for batch in batches]).tolist()
        tiles_before = np.cumsum([0] + [len(batch["pixel_values"]) for batch in batches]).tolist()
        merged["prompt_to_image"] = torch.cat(
            [batch["prompt_to_image"] + offset for batch, offset in zip(batches, images_before)]
        )
        merged["prompt_tile_indices"] = torch.cat(
            [batch["prompt_tile_indices"] + offset for batch, offset in zip(batches, tiles_before)]
        )
        return BatchFeature(data=merged)

    @staticmethod
    def expand_images_to_prompts(inputs) -> dict:
        r"""
        Repeats the image inputs of [`~Self1EProcessor.prepare_segmentation_inputs`] for each prompt, for a plain
        forward pass in which the vision tower runs once per prompt. To run it once per image instead, index the
        image features computed from `inputs["pixel_values"]` with `inputs["prompt_tile_indices"]`.

        Args:
            inputs (`Mapping`):
                The output of [`~Self1EProcessor.prepare_segmentation_inputs`].

        Returns:
            `dict`: `pixel_values` (each prompt's tiles, prompt by prompt), and `tile_grids`, `num_tiles`,
            `has_thumbnail` and `original_sizes` with one row per prompt.
        """
        prompt_to_image = torch.as_tensor(inputs["prompt_to_image"], dtype=torch.long)
        tile_indices = torch.as_tensor(inputs["prompt_tile_indices"], dtype=torch.long)
        expanded = {"pixel_values": torch.as_tensor(inputs["pixel_values"])[tile_indices]}
        for key in ("tile_grids", "num_tiles", "has_thumbnail", "original_sizes"):
            if key in inputs:
                expanded[key] = torch.as_tensor(inputs[key])[prompt_to_image]
        return expanded

    def post_process_segmentation(
        self,
        pred_masks: Sequence[torch.Tensor],
        original_sizes: torch.Tensor | Sequence[tuple[int, int]],
        prompt_to_image: torch.Tensor | Sequence[int],
        threshold: float = 0.5,
        semantic: bool = False,
        return_probabilities: bool = False,
        prompt_names: Sequence[str] | None = None,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    ) -> list[MaskPrediction]:
        r"""
        Turns the mask logits of every prompt into masks at the size of the image it asked about, scored, one
        [`MaskPrediction`] per image. Working memory is bounded by `max_chunk_bytes`, see
        [`logits_to_prediction`].

        Args:
            pred_masks (`Sequence[torch.Tensor]`):
                One `(num_masks, height, width)` tensor of canvas logits per prompt, as in
                [`Self1ESegmentationOutput`] (a conversation gives one mask per `[SEG]`).
            original_sizes (`torch.Tensor` of shape `(num_images, 2)`):
                `(height, width)` of each image.
            prompt_to_image (`torch.Tensor` of shape `(num_prompts,)`):
                The image each prompt asked about.
            threshold (`float`, *optional*, defaults to 0.5):
                Probability, strictly between 0 and 1, above which a pixel is inside a mask.
            semantic (`bool`, *optional*, defaults to `False`):
                The prompts are classes competing for every pixel: each pixel goes to its most probable class, and is
                background where none passes `threshold` (see [`logits_to_semantic_prediction`]).
            return_probabilities (`bool`, *optional*, defaults to `False`):
                Also keep every mask's full-size probabilities (4 bytes per pixel, not bounded by `max_chunk_bytes`).
            prompt_names (`Sequence[str]`, *optional*):
                A name per prompt, for the error raised on non-finite logits.
            max_chunk_bytes (`int`, *optional*):
                Working memory of the resize, threshold and scoring.

        Returns:
            `list[MaskPrediction]`: per image, the masks of its prompts in prompt order.
        """
        to_prediction = logits_to_semantic_prediction if semantic else logits_to_prediction
        predictions = []
        for rows, (height, width) in zip(prompts_by_image(prompt_to_image, len(original_sizes)), original_sizes):
            mask_names = None if prompt_names is None else names_of_masks(prompt_names, pred_masks, rows)
            logits = torch.cat([pred_masks[row] for row in rows])
            predictions.append(
                to_prediction(
                    logits,
                    (int(height), int(width)),
                    threshold,
                    return_probabilities,
                    prompts=mask_names,
                    max_chunk_bytes=max_chunk_bytes,
                )
            )
        return predictions

    def post_process_masks(
        self,
        pred_masks: list[torch.Tensor],
        original_sizes: torch.Tensor | list[tuple[int, int]],
        threshold: float | None = 0.5,
    ) -> list[torch.Tensor]:
        """
        Resizes mask logits back to the input images and thresholds them at the probability `threshold` (`None`:
        the resized logits). See [`Self1EImageProcessor.post_process_masks`].
        """
        return self.image_processor.post_process_masks(pred_masks, original_sizes, threshold=threshold)


class NamedPrompt(NamedTuple):
    """A prompt (a target or a conversation) and the name error messages give it, e.g. `prompts[1][0]`."""

    prompt: "str | list[dict]"
    name: str


def prompts_by_image(prompt_to_image: torch.Tensor | Sequence[int], num_images: int) -> list[list[int]]:
    """The prompts (row indices) that ask about each image."""
    rows: list[list[int]] = [[] for _ in range(num_images)]
    for row, image in enumerate(torch.as_tensor(prompt_to_image).tolist()):
        rows[image].append(row)
    return rows


def names_of_masks(prompt_names: Sequence[str], pred_masks: Sequence[torch.Tensor], rows: Sequence[int]) -> list[str]:
    """The name of every mask of the prompts `rows`: a conversation gives one mask per `[SEG]`, each named after it."""
    return [prompt_names[row] for row in rows for _ in range(pred_masks[row].shape[0])]


def _pair_images_with_prompts(images, prompts) -> tuple[list, list[list[NamedPrompt]]]:
    """The list of images and the prompts of each: one image takes a prompt or a list of them, a list (or a 4-D
    batch) of images a list with one such entry per image."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        given = f"a batch of {len(images)} images (images has shape {tuple(images.shape)})"
    elif isinstance(images, (list, tuple)):
        given = f"a list of {len(images)} images"
    else:
        return [images], [_prompts_of_entry(prompts, "prompts")]
    images = list(images)
    if not isinstance(prompts, (list, tuple)) or is_conversation(prompts) or len(prompts) != len(images):
        length = f" of length {len(prompts)}" if isinstance(prompts, (list, tuple)) else ""
        raise ValueError(
            f"prompts: with {given}, pass a list of {len(images)} entries (a prompt or a list of prompts per image), "
            f"got {type(prompts).__name__}{length}"
        )
    if not images:
        raise ValueError("images is empty")
    return images, [_prompts_of_entry(entry, f"prompts[{index}]") for index, entry in enumerate(prompts)]


def _prompts_of_entry(entry, name: str) -> list[NamedPrompt]:
    """One image's prompts: a prompt (a string or a conversation) or a non-empty list of them."""
    if isinstance(entry, str) or is_conversation(entry):
        return [NamedPrompt(entry, name)]
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise ValueError(f"{name} is empty: every image needs at least one prompt")
        return [NamedPrompt(prompt, f"{name}[{index}]") for index, prompt in enumerate(entry)]
    raise TypeError(f"{name} must be a string, a conversation or a list of them, got {type(entry).__name__}")


def _check_prompts(
    prompts_per_image: list[list[NamedPrompt]],
    prompt_type: str,
    question_template: str | None,
    answer_template: str | None,
) -> None:
    """Every prompt and template can be rendered: checked before the (slower) image processing."""
    for image_prompts in prompts_per_image:
        for prompt, name in image_prompts:
            if is_conversation(prompt):
                _check_conversation(prompt, name)
            else:
                build_question(prompt, prompt_type, question_template, name=name)
                _check_utf8(prompt, name)
    build_answer(answer_template)
    for template, name in ((question_template, "question_template"), (answer_template, "answer_template")):
        if template is not None:
            _check_utf8(template, name)


def _check_rendered_prompt(text: str, conversation: list[dict], name: str) -> None:
    """A custom chat template must keep the one image and the `[SEG]` answers of the conversation."""
    if text.count(IMAGE_PLACEHOLDER) != 1:
        raise ValueError(
            f"chat_template must render exactly one {IMAGE_PLACEHOLDER} per prompt, got "
            f"{text.count(IMAGE_PLACEHOLDER)} for {name}"
        )
    answers = _assistant_texts(conversation)
    seg_tokens = sum(answer.count(SEG_TOKEN) for answer in answers)
    if text.count(SEG_TOKEN) != seg_tokens or not all(answer in text for answer in answers):
        raise ValueError(
            f"chat_template must render the assistant answers with their {SEG_TOKEN} tokens ({answers!r}) for {name}"
        )


def _prompt_tile_indices(num_tiles: list[int], prompt_to_image: list[int]) -> list[int]:
    """For each prompt in order, the indices of its image's tiles among all images' tiles."""
    tile_starts = np.concatenate([[0], np.cumsum(num_tiles)]).tolist()
    return [tile for image in prompt_to_image for tile in range(tile_starts[image], tile_starts[image + 1])]


def _pad_and_concatenate(tensors: list[torch.Tensor], length: int, value: int, padding_side: str) -> torch.Tensor:
    """Pads `(rows, length_i)` tensors to `length` on `padding_side` and stacks their rows."""
    padded = []
    for tensor in tensors:
        missing = length - tensor.shape[1]
        padded.append(F.pad(tensor, (missing, 0) if padding_side == "left" else (0, missing), value=value))
    return torch.cat(padded)


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
    # One copy of the vocabulary: copying Qwen2.5's 151k tokens takes about 0.1 s each time.
    vocabulary = tokenizer.get_vocab()

    def is_single_token(token: str) -> bool:
        known = token in vocabulary or token in tokenizer.get_added_vocab()
        return known and len(tokenizer.encode(token, add_special_tokens=False)) == 1

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
