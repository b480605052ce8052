"""Batches for fine-tuning SELF1E: chat-template tokens, assistant-only labels, image tiles, masks, attention mask."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import BatchFeature

from ..data.masks import decode_rle
from ..modeling.attention_mask import build_segmentation_attention_mask
from ..modeling.configuration_self1e import SEGMENTATION_ATTENTIONS
from ..modeling.processing_self1e import Self1EProcessor
from ..modeling.prompts_self1e import SEG_TOKEN, build_segmentation_conversation

IGNORE_INDEX = -100
IMAGE_INPUT_KEYS = ("pixel_values", "tile_grids", "has_thumbnail", "original_sizes")
ROLES = ("system", "user", "assistant")
ROW_ID_COLUMNS = ("id", "sample_id", "image_id")
"""Columns that identify a row in error messages; the first one a row has is shown."""


@dataclass
class EncodedSample:
    """One sample before padding.

    Attributes:
        input_ids, labels: `(length,)`; labels are `IGNORE_INDEX` outside the assistant turns.
        image_inputs: the image processor's `pixel_values` `(tiles, 3, S, S)`, `tile_grids` `(1, 2)`, `has_thumbnail`
            `(1,)` and `original_sizes` `(1, 2)`; `None` for a text-only sample.
        gt_masks: `(num_seg_tokens, height, width)` float 0/1 masks, in `[SEG]` order.
    """

    input_ids: torch.LongTensor
    labels: torch.LongTensor
    image_inputs: dict[str, torch.Tensor] | None
    gt_masks: torch.FloatTensor


def collate_token_layout(
    input_ids: Sequence[torch.LongTensor],
    labels: Sequence[torch.LongTensor],
    pad_token_id: int,
    image_token_id: int,
    seg_token_id: int,
    segmentation_attention: str | None = None,
) -> dict[str, torch.Tensor]:
    """
    Right-pads unpadded `(length,)` sequences into `input_ids` and `labels` (padded with `IGNORE_INDEX`), and gives
    `attention_mask`: the `(batch, length)` padding mask, or with a `segmentation_attention` variant the
    `(batch, 1, length, length)` boolean segmentation attention mask the model would build from it (samples without
    `[SEG]` stay causal, padding keys are never attended).
    """
    padded_ids = pad_sequence(list(input_ids), batch_first=True, padding_value=pad_token_id)
    padded_labels = pad_sequence(list(labels), batch_first=True, padding_value=IGNORE_INDEX)
    padding_mask = pad_sequence([torch.ones_like(ids) for ids in input_ids], batch_first=True, padding_value=0)
    attention_mask = padding_mask
    if segmentation_attention is not None:
        attention_mask = build_segmentation_attention_mask(
            padded_ids, padding_mask, image_token_id, seg_token_id, segmentation_attention
        )
    return {"input_ids": padded_ids, "attention_mask": attention_mask, "labels": padded_labels}


class Self1EDataCollator:
    r"""
    Turns samples into a batch for [`Self1EForSegmentation`]: the chat template of the processor, labels on the
    assistant turns only (`return_assistant_tokens_mask`), right padding, the tiles of every image, and the
    ground-truth masks. Segmentation, VQA and text-only samples mix freely in a batch.

    A sample is a mapping with
    - `image`: a PIL image, array, tensor or path (processed by the processor's image processor), or `None`/absent for
      a text-only sample;
    - the text, one of: `conversation` (chat messages; the image as one `{"type": "image"}` item, `[SEG]` in the
      assistant turns where masks are expected), `expression` (a target, rendered with the validation prompt;
      optional `prompt_type` `"short"`/`"instruction"` and `answer` template), `prompt` with `answer` (one user
      question and its reply), or pre-tokenized `input_ids` (with optional `labels`, default a copy of `input_ids`,
      and `attention_mask`, whose zeros are dropped), which are used as they are;
    - `masks` (or a single `mask`): one `(height, width)` binary mask per `[SEG]` token (RLE dict, PIL image, array or
      tensor; or an `(n, height, width)` array), at the size of the image as given; empty or absent without `[SEG]`.
      A gRefCOCO no-target expression still has its `[SEG]`, with an all-zero mask. Mask values must be boolean, 0/1,
      or 0/255 in uint8 (8-bit PNG masks such as a `datasets.Image(mode="L")` column); soft, signed or NaN values
      are refused rather than guessed at.

    A sample that does not fit (a mask of another size, ambiguous mask values, `[SEG]` outside the assistant turns,
    a conversation without an assistant turn or with an unknown role) is a `ValueError` naming the row, by its index
    in the batch and its id column (one of `ROW_ID_COLUMNS`) when it has one, and the field.

    The batch holds `input_ids`, `labels`, `attention_mask`, `gt_masks` (per sample, `(n_seg, height, width)` float)
    and, when some sample has an image, `pixel_values`, `tile_grids` and `has_thumbnail` in sample order. With
    `segmentation_attention=None` the attention mask is the 2D padding mask and the model builds its segmentation
    mask; with a variant (`from_model_config` takes the model's) it is the 4D boolean mask itself, whose diagonal is
    the padding mask.

    Use it with `Trainer(..., data_collator=collator)` and `TrainingArguments(remove_unused_columns=False)`, so that the
    dataset's columns reach the collator.

    Args:
        processor ([`Self1EProcessor`]): tokenizer, chat template and image processor.
        segmentation_attention (`str`, *optional*): the attention variant of the model (`config.segmentation_attention`)
            for a prepared 4D mask; `None` for the 2D padding mask.
        max_length (`int`, *optional*): sequences are cut to this many tokens; masks of `[SEG]` tokens cut away are
            dropped, and cutting into an image's tokens is an error.
        images_kwargs (`dict`, *optional*): image processor overrides, e.g. `{"max_tiles": 4}`.
    """

    def __init__(
        self,
        processor: Self1EProcessor,
        segmentation_attention: str | None = None,
        max_length: int | None = None,
        images_kwargs: dict | None = None,
    ):
        if segmentation_attention is not None and segmentation_attention not in SEGMENTATION_ATTENTIONS:
            raise ValueError(
                f"segmentation_attention must be None or one of {SEGMENTATION_ATTENTIONS}, got {segmentation_attention!r}"
            )
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if processor.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token, which right padding needs")
        self.processor = processor
        self.segmentation_attention = segmentation_attention
        self.max_length = max_length
        self.images_kwargs = dict(images_kwargs or {})

    @classmethod
    def from_model_config(cls, processor: Self1EProcessor, config, **kwargs) -> "Self1EDataCollator":
        """A collator preparing the 4D attention mask of `config.segmentation_attention`, after checking that the
        processor's tokens and tiles agree with the `Self1EConfig`."""
        processor.check_model_config(config)
        return cls(processor, segmentation_attention=config.segmentation_attention, **kwargs)

    def __call__(self, samples: Sequence[Mapping]) -> dict:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        encoded = [self.encode(sample, name=row_name(sample, index)) for index, sample in enumerate(samples)]
        batch = collate_token_layout(
            [sample.input_ids for sample in encoded],
            [sample.labels for sample in encoded],
            pad_token_id=self.processor.tokenizer.pad_token_id,
            image_token_id=self.processor.image_token_id,
            seg_token_id=self.processor.seg_token_id,
            segmentation_attention=self.segmentation_attention,
        )
        images = [sample.image_inputs for sample in encoded if sample.image_inputs is not None]
        if images:
            for key in ("pixel_values", "tile_grids", "has_thumbnail"):
                batch[key] = torch.cat([image[key] for image in images])
        batch["gt_masks"] = [sample.gt_masks for sample in encoded]
        return batch

    def encode(self, sample: Mapping, name: str = "sample") -> EncodedSample:
        """One sample's tokens, labels, image tiles and masks (see the class docstring for what a sample holds)."""
        image = sample.get("image")
        if sample.get("input_ids") is not None:
            input_ids, labels, image_inputs = self._pretokenized(sample, image, name)
        else:
            input_ids, labels, image_inputs = self._tokenize(self._conversation(sample, name), image, name)

        masks = _named_masks(sample, name)
        if masks and image_inputs is None:
            raise ValueError(f"{name} has masks but no image: a mask is read at the size of its image")
        seg_token_id = self.processor.seg_token_id
        check_seg_tokens_labelled(input_ids, labels, seg_token_id, name)
        num_seg = int((input_ids == seg_token_id).sum())
        if len(masks) != num_seg:
            raise ValueError(f"{name} has {num_seg} [SEG] tokens but {len(masks)} masks")
        if masks:
            image_size = tuple(image_inputs["original_sizes"][0].tolist())
            masks = [binary_mask(mask, image_size, mask_name) for mask_name, mask in masks]
        if self.max_length is not None and input_ids.numel() > self.max_length:
            image_tokens = int((input_ids == self.processor.image_token_id).sum())
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
            if int((input_ids == self.processor.image_token_id).sum()) != image_tokens:
                raise ValueError(f"{name}: max_length={self.max_length} cuts into the image tokens; raise max_length")
            masks = masks[: int((input_ids == seg_token_id).sum())]

        if masks:
            gt_masks = torch.stack(masks)
        else:
            size = (0, 0) if image_inputs is None else tuple(image_inputs["original_sizes"][0].tolist())
            gt_masks = torch.zeros((0, *size))
        return EncodedSample(input_ids, labels, image_inputs, gt_masks)

    def _conversation(self, sample: Mapping, name: str) -> list[dict]:
        if sample.get("conversation") is not None:
            check_conversation(sample["conversation"], f"{name}['conversation']")
            return sample["conversation"]
        if sample.get("expression") is not None:
            return build_segmentation_conversation(
                sample["expression"],
                prompt_type=sample.get("prompt_type") or "short",
                answer_template=sample.get("answer"),
                name=f"{name}['expression']",
            )
        if sample.get("prompt") is not None:
            if sample.get("answer") is None:
                raise ValueError(f"{name} has a prompt but no answer to train on")
            image_item = [{"type": "image"}] if sample.get("image") is not None else []
            return [
                {"role": "user", "content": [*image_item, {"type": "text", "text": sample["prompt"]}]},
                {"role": "assistant", "content": [{"type": "text", "text": sample["answer"]}]},
            ]
        raise ValueError(f"{name} needs a conversation, an expression, a prompt with an answer, or input_ids")

    def _tokenize(self, conversation: list[dict], image, name: str) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
        image_items = sum(
            item["type"] == "image"
            for message in conversation
            if not isinstance(message["content"], str)
            for item in message["content"]
        )
        if image_items != (image is not None):
            raise ValueError(
                f"{name}: its conversation has {image_items} image items but the sample has "
                f"{'an image' if image is not None else 'no image'}; give one image item per image, the image itself "
                "as the sample's `image`"
            )
        processor_kwargs = dict(self.images_kwargs)
        if image is not None:
            processor_kwargs["images"] = [image]
        inputs = self.processor.apply_chat_template(
            conversation,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            # Lists, not tensors: transformers walks the offsets token by token to build the assistant mask, which
            # is several times slower over a tensor than over a list.
            return_tensors=None,
            processor_kwargs=processor_kwargs,
        )
        input_ids = torch.tensor(inputs["input_ids"][0], dtype=torch.long)
        is_answer = torch.tensor(inputs["assistant_masks"][0], dtype=torch.bool)
        labels = torch.where(is_answer, input_ids, IGNORE_INDEX)
        image_inputs = None
        if image is not None:
            image_inputs = dict(BatchFeature({key: inputs[key] for key in IMAGE_INPUT_KEYS}, tensor_type="pt"))
        return input_ids, labels, image_inputs

    def _pretokenized(self, sample: Mapping, image, name: str) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
        vocab_size = len(self.processor.tokenizer)
        input_ids = _integer_sequence(sample["input_ids"], "input_ids", name, range(vocab_size))
        if not input_ids.numel():
            raise ValueError(f"{name}: input_ids is empty")
        labels = sample.get("labels")
        if labels is None:
            labels = input_ids.clone()
        else:
            labels = _integer_sequence(labels, "labels", name, range(vocab_size), extra_values={IGNORE_INDEX})
        if sample.get("attention_mask") is not None:
            is_token = _integer_sequence(
                sample["attention_mask"], "attention_mask", name, range(2), kinds="iub"
            ).bool()
        else:
            is_token = torch.ones_like(input_ids, dtype=torch.bool)
        for what, values in (("labels", labels), ("attention_mask", is_token)):
            if values.shape != input_ids.shape:
                raise ValueError(
                    f"{name}: {what} has {values.numel()} entries, input_ids {input_ids.numel()}; they go token by "
                    "token"
                )
        if not is_token.any():
            raise ValueError(f"{name}: attention_mask has no 1, so the row has no tokens")
        input_ids, labels = input_ids[is_token], labels[is_token]

        image_inputs = None
        expected_image_tokens = 0
        if image is not None:
            image_inputs = self.processor.image_processor([image], return_tensors="pt", **self.images_kwargs)
            image_inputs = {key: image_inputs[key] for key in IMAGE_INPUT_KEYS}
            expected_image_tokens = image_inputs["pixel_values"].shape[0] * self.processor.image_seq_length
        image_tokens = int((input_ids == self.processor.image_token_id).sum())
        if image_tokens != expected_image_tokens:
            raise ValueError(
                f"{name}: input_ids hold {image_tokens} image tokens but its image takes {expected_image_tokens}"
            )
        return input_ids, labels, image_inputs


def _integer_sequence(
    values, what: str, name: str, valid: range, extra_values: frozenset = frozenset(), kinds: str = "iu"
) -> torch.Tensor:
    """`values` (a list, array or tensor of integers, of a dtype kind in `kinds`, within `valid` or `extra_values`) as
    a `(length,)` int64 tensor; anything else is a ValueError naming the row and the column."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        array = None
    if array is None or array.ndim != 1 or (array.size and array.dtype.kind not in kinds):
        raise ValueError(f"{name}: {what} must be one sequence of integers, got {_described(values)}")
    outside = [value for value in array.tolist() if value not in valid and value not in extra_values]
    if outside:
        raise ValueError(
            f"{name}: {what} holds {outside[0]!r}, outside [{valid.start}, {valid.stop - 1}]"
            + (f" (or {sorted(extra_values)})" if extra_values else "")
        )
    return torch.as_tensor(array.astype(np.int64), dtype=torch.long)


def _described(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:57]}..."


def row_name(sample: Mapping, index: int) -> str:
    """How errors name a row: its index in the batch, with its id when it has an id column (`samples[3] (id=17)`)."""
    for column in ROW_ID_COLUMNS:
        if sample.get(column) is not None:
            return f"samples[{index}] ({column}={sample[column]!r})"
    return f"samples[{index}]"


def check_conversation(conversation: Sequence[Mapping], name: str) -> None:
    """Known roles, `[SEG]` in assistant turns only (one in a prompt would still be read as a mask slot), and at least
    one assistant turn (without one every label is ignored and the loss is NaN)."""
    if isinstance(conversation, str) or not isinstance(conversation, Sequence) or not conversation:
        raise TypeError(f"{name} must be a non-empty list of chat messages, got {type(conversation).__name__}")
    for index, message in enumerate(conversation):
        if not isinstance(message, Mapping) or "role" not in message:
            raise TypeError(f"{name}[{index}] must be a message with a 'role' and a 'content'")
        role = message["role"]
        if role not in ROLES:
            raise ValueError(f"{name}[{index}] has role {role!r}; expected one of {', '.join(ROLES)}")
        if role != "assistant" and SEG_TOKEN in _message_text(message):
            raise ValueError(
                f"{name}[{index}] (role {role!r}) contains {SEG_TOKEN}; it belongs in the assistant turns only, where "
                "each one reads a mask"
            )
    if not any(message["role"] == "assistant" for message in conversation):
        raise ValueError(f"{name} has no assistant turn, so there is nothing to train on")


def check_seg_tokens_labelled(input_ids: torch.Tensor, labels: torch.Tensor, seg_token_id: int, name: str) -> None:
    """Every `[SEG]` must be part of the answer: the model reads a mask at each one, labelled or not."""
    unlabelled = ((input_ids == seg_token_id) & (labels == IGNORE_INDEX)).nonzero().flatten().tolist()
    if unlabelled:
        raise ValueError(
            f"{name} has {SEG_TOKEN} tokens outside the answer (unlabelled positions {unlabelled}); {SEG_TOKEN} "
            "belongs in the assistant turns only"
        )


def binary_mask(mask, image_size: tuple[int, int], name: str) -> torch.FloatTensor:
    """A `(height, width)` float 0/1 target from one mask, after checking its values and that it has the image's
    `(height, width)` (before any resizing, so that a transposed or rescaled mask is not stretched onto the image)."""
    values = _mask_values(mask)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a (height, width) mask, got shape {values.shape}")
    check_mask_values(values, name)
    if values.shape != tuple(image_size):
        raise ValueError(
            f"{name} is {values.shape[0]}x{values.shape[1]} (height x width) but its image is "
            f"{image_size[0]}x{image_size[1]}; give masks at the size of their image"
        )
    return torch.from_numpy(values != 0).float()


def check_mask_values(values: np.ndarray, name: str) -> None:
    """A mask is boolean, 0/1, or 0/255 in uint8 (an 8-bit PNG); anything else (soft, signed, NaN) is ambiguous."""
    if values.dtype == np.bool_:
        return
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise TypeError(f"{name} must be boolean or numeric, got dtype {values.dtype}")
    if ((values == 0) | (values == 1)).all():
        return
    if values.dtype == np.uint8 and ((values == 0) | (values == 255)).all():
        return
    found = np.unique(values)
    shown = ", ".join(f"{value:g}" for value in found[:6].tolist()) + (", ..." if found.size > 6 else "")
    raise ValueError(
        f"{name} holds values other than 0/1 (or 0/255 in uint8): {shown}; a mask must be boolean, 0/1 or an 8-bit "
        "0/255 PNG, so threshold soft or signed masks before collating"
    )


def _mask_values(mask) -> np.ndarray:
    """A mask's values as given (an RLE decodes to 0/1)."""
    if isinstance(mask, Mapping):
        return decode_rle(mask)
    if isinstance(mask, torch.Tensor):
        return mask.detach().cpu().numpy()
    return np.asarray(mask)


def _message_text(message: Mapping) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(item.get("text") or "" for item in content or () if isinstance(item, Mapping))


def _named_masks(sample: Mapping, name: str) -> list[tuple[str, object]]:
    """The sample's masks, each with its name in error messages."""
    masks = sample.get("masks")
    if masks is None and sample.get("mask") is not None:
        return [(f"{name}['mask']", sample["mask"])]
    return [] if masks is None else [(f"{name}['masks'][{index}]", mask) for index, mask in enumerate(masks)]


__all__ = [
    "IGNORE_INDEX",
    "EncodedSample",
    "Self1EDataCollator",
    "binary_mask",
    "check_conversation",
    "check_mask_values",
    "check_seg_tokens_labelled",
    "collate_token_layout",
    "row_name",
]
