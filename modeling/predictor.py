"""`Self1EPredictor`: images and sentences in, masks at each image's own size out. It hides the processor, runs the
vision tower once per image however many prompts ask about it, and batches the prompts through the language model."""

import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers.utils import logging

from .mask_postprocessing import (
    DEFAULT_MAX_CHUNK_BYTES,
    MaskPrediction,
    PackedMasks,
    logits_to_prediction,
    logits_to_semantic_prediction,
)
from .processing_self1e import Self1EProcessor, is_conversation
from .prompts_self1e import SEG_TOKEN

if TYPE_CHECKING:
    from .modeling_self1e import Self1EForSegmentation

logger = logging.get_logger(__name__)

DEFAULT_MAX_BATCH_TOKENS = 32768
# Keyword options of `segment()` handed to the processor: prompt rendering, and the image options that keep the tiles
# in the format the model was built for (tile size, normalisation and tensor type stay the processor's).
SEGMENT_PROCESSOR_OPTIONS = (
    "question_template",
    "answer_template",
    "chat_template",
    "min_tiles",
    "max_tiles",
    "use_thumbnail",
    "max_image_pixels",
    "input_data_format",
)
# Keyword options of `segment()` itself.
SEGMENT_OPTIONS = ("processor", "classes", "threshold", "prompt_type", "return_probabilities", "show_progress")


@dataclass
class SegmentationResult:
    """Everything predicted for one image, at the image's original size.

    Attributes:
        prompts: the prompt (or class name) of each mask.
        packed_masks: the masks at one bit per pixel; `masks` unpacks them all, `packed_masks.mask(index)` one.
        scores: `(num_prompts,)` mean probability inside each mask (0 for an empty mask).
        no_target: `(num_prompts,)` True where nothing in the image matches the prompt (empty mask).
        probabilities: `(num_prompts, height, width)` per-prompt probabilities, when requested.
        label_map: with `classes=`, `(height, width)` index of each pixel's class in `prompts`, -1 for background;
            `masks` are then `label_map == k`.
    """

    prompts: list[str]
    packed_masks: PackedMasks
    scores: torch.FloatTensor
    no_target: torch.BoolTensor
    probabilities: torch.FloatTensor | None = None
    label_map: torch.LongTensor | None = None

    @cached_property
    def masks(self) -> torch.BoolTensor:
        """`(num_prompts, height, width)` booleans, unpacked on first access (one byte per pixel of every mask)."""
        return self.packed_masks.unpack()

    @classmethod
    def from_prediction(cls, prompts: list[str], prediction: MaskPrediction) -> "SegmentationResult":
        return cls(
            prompts,
            prediction.packed_masks,
            prediction.scores,
            prediction.no_target,
            prediction.probabilities,
            prediction.label_map,
        )


class Self1EPredictor:
    """Segments images with a [`Self1EForSegmentation`] and its [`Self1EProcessor`].

    Args:
        model: the model (any dtype and device; inputs follow it).
        processor: the processor saved with the model.
        max_batch_tokens: prompts about one image are run through the language model in chunks of at most this many
            (padded) tokens, which bounds memory when asking about many classes.
        max_postprocess_bytes: masks are resized to the image's size, thresholded, scored and packed to one bit per
            pixel in chunks of about this many working bytes (9 per pixel of each mask, one mask at least), so the
            working memory of post-processing does not grow with the number of prompts; with `classes=`, the running
            best class adds about 25 bytes per pixel. What grows is the result: `height * width / 8` bytes per mask
            (`masks` unpacks them to one byte per pixel on first access) and, with `return_probabilities=True`, 4
            bytes per pixel of every mask, which this budget does not bound. The language model's chunk
            (`max_batch_tokens`) is the other peak.
    """

    def __init__(
        self,
        model: "Self1EForSegmentation",
        processor: Self1EProcessor,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_postprocess_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    ):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        if max_postprocess_bytes < 1:
            raise ValueError(f"max_postprocess_bytes must be positive, got {max_postprocess_bytes}")
        processor.check_model_config(model.config)
        self.model = model
        self.processor = processor
        self.max_batch_tokens = max_batch_tokens
        self.max_postprocess_bytes = max_postprocess_bytes

    def segment(
        self,
        images,
        prompts=None,
        *,
        classes: list[str] | None = None,
        threshold: float = 0.5,
        prompt_type: str = "short",
        return_probabilities: bool = False,
        show_progress: bool = False,
        **images_kwargs,
    ) -> "SegmentationResult | list[SegmentationResult]":
        """Masks for `prompts` (one image with a prompt or a list of prompts, or a list of images with one entry each)
        or, with `classes`, an open-vocabulary semantic map of every image (paper Sec. 4.2.4).

        Args:
            images: PIL image, array, tensor or path, or a list of them (a 4-D array or tensor is a list of images).
                Arrays and tensors are `HxW`, `HxWxC` or `CxHxW`; a shape that reads both ways, such as `(3, 64, 3)`,
                needs `input_data_format` (see [`Self1EImageProcessor`]).
            prompts: referring expressions / class names (`prompt_type="short"`), full-sentence instructions
                (`prompt_type="instruction"`), or conversations whose assistant turn holds `[SEG]`. A string is one
                prompt (never split into characters); with a list of images, one entry (a prompt or a list of
                prompts) per image.
            classes: class names asked about every image (a list, or one comma-separated string); each pixel goes to
                the most probable class, pixels where no class passes `threshold` are background. Names must differ
                once surrounding spaces are stripped.
            threshold: probability, strictly between 0 and 1, above which a pixel belongs to a mask.
            return_probabilities: also return every mask's full-size probabilities (4 bytes per pixel of every mask:
                unlike the masks, not bounded by `max_postprocess_bytes`).
            show_progress: show a progress bar when the prompts run through the language model in several chunks.
            images_kwargs: image and prompt options handed to the processor: `min_tiles`, `max_tiles`,
                `use_thumbnail`, `max_image_pixels` (`None`: no limit), `input_data_format`, `question_template`,
                `answer_template`, `chat_template`. Others raise a `TypeError`.

        Returns:
            A [`SegmentationResult`] for a single image, a list of them for a list of images.

        Raises:
            TypeError, ValueError, FileNotFoundError: bad arguments, checked before the model runs.
        """
        check_threshold(threshold)
        check_segment_options(images_kwargs, "segment()", SEGMENT_OPTIONS)
        single_image = not is_image_batch(images)
        if classes is not None:
            if prompts is not None:
                raise ValueError("pass either prompts or classes, not both")
            classes = _check_classes(classes)
            prompts = list(classes) if single_image else [list(classes) for _ in images]
        if prompts is None:
            raise ValueError("prompts is required: what should be segmented?")
        inputs = self.processor.prepare_segmentation_inputs(images, prompts, prompt_type=prompt_type, **images_kwargs)
        self._check_length(inputs)
        labels = _prompt_labels(prompts if single_image else list(prompts), single_image)
        logits = self._mask_logits(inputs, show_progress)

        results = []
        prompt_to_image = inputs["prompt_to_image"].tolist()
        postprocess = logits_to_prediction if classes is None else logits_to_semantic_prediction
        for image_index, (height, width) in enumerate(inputs["original_sizes"].tolist()):
            rows = [row for row, image in enumerate(prompt_to_image) if image == image_index]
            image_logits = torch.cat([logits[row] for row in rows])
            # A conversation gives one mask per [SEG]; each mask is named after its prompt.
            image_labels = [labels[row] for row in rows for _ in range(logits[row].shape[0])]
            prediction = postprocess(
                image_logits,
                (height, width),
                threshold,
                return_probabilities,
                prompts=image_labels,
                max_chunk_bytes=self.max_postprocess_bytes,
            )
            results.append(SegmentationResult.from_prediction(image_labels, prediction))
        return results[0] if single_image else results

    def chat(self, image, question: str, max_new_tokens: int = 64, **generate_kwargs) -> str:
        """The model's free-form answer about `image`, decoded causally like any chat model."""
        text = self.processor.render_chat_prompt(question)
        inputs = self.processor(images=[image], text=[text], return_tensors="pt").to(self.model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        model_inputs = {key: inputs[key] for key in ("input_ids", "attention_mask", "pixel_values")}
        with torch.inference_mode():
            generated = self.model.generate(**model_inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
        answer = generated[0, inputs["input_ids"].shape[1] :]
        return self.processor.tokenizer.decode(answer, skip_special_tokens=True).strip()

    def segment_answer(self, image, question: str, answer: str, threshold: float = 0.5) -> SegmentationResult:
        """One mask per `[SEG]` in `answer` (e.g. returned by [`~Self1EPredictor.chat`]), read with the segmentation
        attention mask in a second forward pass over the question and the answer."""
        if SEG_TOKEN not in answer:
            raise ValueError(f"answer contains no {SEG_TOKEN} token, so there is nothing to segment: {answer!r}")
        conversation = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer},
        ]
        result = self.segment(image, [conversation], threshold=threshold)
        result.prompts = [f"{answer} [{index}]" for index in range(len(result.packed_masks))]
        return result

    def _check_length(self, inputs) -> None:
        """Refuses prompts longer than the language model's positions, saying whether tiles or text are too many."""
        limit = getattr(self.model.config.text_config, "max_position_embeddings", None)
        lengths = inputs["attention_mask"].sum(-1)
        row = int(lengths.argmax())
        length = int(lengths[row])
        if limit is None or length <= limit:
            return
        tiles = int(inputs["num_tiles"][inputs["prompt_to_image"][row]])
        tile_tokens = self.processor.image_seq_length
        text_tokens = length - tiles * tile_tokens
        if text_tokens + tile_tokens > limit:
            advice = f"its text alone takes {text_tokens} tokens, too many beside one image tile: shorten the prompt"
        else:
            advice = f"{text_tokens} are text, {tiles * tile_tokens} the image's {tiles} tiles: lower max_tiles"
        raise ValueError(
            f"a prompt is {length} tokens long, more than the language model's {limit} positions; {advice}"
        )

    def _mask_logits(self, inputs, show_progress: bool) -> list[torch.FloatTensor]:
        """Mask logits of every prompt; the vision tower runs once, the prompts in token-bounded chunks."""
        model = self.model
        device = model.device
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        prompt_to_image = inputs["prompt_to_image"].tolist()
        grids = [tuple(grid) for grid in inputs["tile_grids"].tolist()]
        thumbnails = [bool(flag) for flag in inputs["has_thumbnail"].tolist()]
        tiles_per_prompt = [int(inputs["num_tiles"][image]) for image in prompt_to_image]
        tile_starts = torch.tensor([0, *tiles_per_prompt]).cumsum(0).tolist()
        sample_tiles = inputs["sample_tile_indices"]
        chunk_size = max(1, self.max_batch_tokens // input_ids.shape[1])
        chunks = range(0, len(prompt_to_image), chunk_size)
        if show_progress and len(chunks) > 1:
            chunks = logging.tqdm(chunks, desc="segmenting", unit="batch")

        logits = []
        with torch.inference_mode():
            features = model.get_image_features(inputs["pixel_values"].to(device=device, dtype=model.dtype))
            for start in chunks:
                rows = range(start, min(start + chunk_size, len(prompt_to_image)))
                length = int(attention_mask[rows.start : rows.stop].sum(-1).max())
                outputs = model(
                    input_ids=input_ids[rows.start : rows.stop, :length].to(device),
                    attention_mask=attention_mask[rows.start : rows.stop, :length].to(device),
                    image_features=features.select_tiles(
                        sample_tiles[tile_starts[rows.start] : tile_starts[rows.stop]]
                    ),
                    tile_grids=[grids[prompt_to_image[row]] for row in rows],
                    has_thumbnail=[thumbnails[prompt_to_image[row]] for row in rows],
                    logits_to_keep=1,
                )
                logits.extend(mask.float().cpu() for mask in outputs.pred_masks)
        return logits


def is_image_batch(images) -> bool:
    """Whether `images` holds several images: a list or tuple, or a 4-D array or tensor."""
    return isinstance(images, (list, tuple)) or (isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4)


def check_threshold(threshold) -> None:
    """A mask threshold is a probability strictly between 0 and 1 (0.5 is the reference's `logits > 0`)."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            f"threshold must be a number strictly between 0 and 1, got {type(threshold).__name__} {threshold!r}"
        )
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability strictly between 0 and 1, got {threshold}")


def check_segment_options(options: dict, caller: str, own_options: tuple[str, ...]) -> None:
    """Refuses keyword options for the processor that are not `SEGMENT_PROCESSOR_OPTIONS`, naming them and what
    `caller` accepts (`own_options` and the processor options)."""
    unknown = sorted(set(options) - set(SEGMENT_PROCESSOR_OPTIONS))
    if unknown:
        raise TypeError(
            f"{caller} got unexpected keyword arguments {unknown}; it accepts "
            f"{', '.join(own_options + SEGMENT_PROCESSOR_OPTIONS)}"
        )


def _check_classes(classes) -> list[str]:
    if isinstance(classes, str):
        classes = [name.strip() for name in classes.split(",")]
    if not isinstance(classes, (list, tuple)):
        raise TypeError(f"classes must be a list of class names, got {type(classes).__name__}")
    if not classes:
        raise ValueError("classes must be a non-empty list of class names")
    first_index: dict[str, int] = {}
    for index, name in enumerate(classes):
        if not isinstance(name, str):
            raise TypeError(f"classes[{index}] must be a class name (a string), got {type(name).__name__}")
        if not name.strip():
            raise ValueError(f"classes[{index}] must be a non-empty class name, got {name!r}")
        # Prompts strip their text, so names that differ only in surrounding spaces ask the same question.
        if name.strip() in first_index:
            earlier = first_index[name.strip()]
            raise ValueError(
                f"classes[{earlier}] ({classes[earlier]!r}) and classes[{index}] ({name!r}) are the same class once "
                "surrounding spaces are stripped; name each class once"
            )
        first_index[name.strip()] = index
    return list(classes)


def _prompt_labels(prompts, single_image: bool) -> list[str]:
    """The label of every prompt row, flattened in the processor's order (image by image)."""
    per_image = [prompts] if single_image else prompts
    labels = []
    for entry in per_image:
        entries = [entry] if isinstance(entry, str) or is_conversation(entry) else list(entry)
        labels.extend(prompt if isinstance(prompt, str) else "conversation" for prompt in entries)
    return labels


__all__ = ["SegmentationResult", "Self1EPredictor"]
