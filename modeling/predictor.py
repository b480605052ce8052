"""`Self1EPredictor`: images and sentences in, masks at each image's own size out. It owns the processor, runs the
vision tower once per image however many prompts ask about it, and batches the prompts through the language model."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.image_processing_utils import BatchFeature
from transformers.utils import TRANSFORMERS_DYNAMIC_MODULE_NAME, logging

from .mask_postprocessing import DEFAULT_MAX_CHUNK_BYTES, MaskPrediction, check_threshold
from .processing_self1e import Self1EProcessor, is_conversation, names_of_masks, prompts_by_image
from .prompts_self1e import SEG_TOKEN

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
class SegmentationResult(MaskPrediction):
    r"""
    Everything predicted for one image, at the image's original size: a [`MaskPrediction`] whose masks are named.

    Args:
        prompts (`list[str]`):
            The prompt (or class name) of each mask; `"conversation"` for the masks of a conversation. With
            `classes=`, `label_map` holds each pixel's index in `prompts` (-1 for background) and `masks` are
            `label_map == k`.
    """

    prompts: list[str] = field(kw_only=True)

    @classmethod
    def from_prediction(cls, prompts: list[str], prediction: MaskPrediction) -> "SegmentationResult":
        """The result of one image's [`MaskPrediction`], its masks named by `prompts`."""
        return cls(**{item.name: getattr(prediction, item.name) for item in fields(MaskPrediction)}, prompts=prompts)


class Self1EPredictor:
    r"""
    Segments images with a [`Self1EForSegmentation`] and the [`Self1EProcessor`] saved with it. The predictor holds
    both explicitly: keep one for repeated calls ([`~Self1EForSegmentation.segment`] builds one on every call).

    Its steps are public for callers that batch differently (the pipeline): [`~Self1EPredictor.preprocess`],
    [`~Self1EPredictor.mask_logits`] and [`~Self1EPredictor.postprocess`].

    Args:
        model ([`Self1EForSegmentation`]):
            The model, in any dtype and on any device; inputs follow it.
        processor ([`Self1EProcessor`]):
            The processor saved with the model.
        max_batch_tokens (`int`, *optional*, defaults to 32768):
            Prompts are run through the language model in chunks of at most this many (padded) tokens, which bounds
            its memory when asking about many prompts or classes.
        max_postprocess_bytes (`int`, *optional*, defaults to 64 MiB):
            Masks are resized to the image's size, thresholded, scored and packed to one bit per pixel in chunks of
            about this many working bytes (9 per pixel of each mask, one mask at least), so the working memory of
            post-processing does not grow with the number of prompts; with `classes=`, the running best class adds
            about 25 bytes per pixel. What grows is the result: `height * width / 8` bytes per mask (`masks` unpacks
            them to one byte per pixel on first access) and, with `return_probabilities=True`, 4 bytes per pixel of
            every mask, which this budget does not bound.
    """

    def __init__(
        self,
        model: PreTrainedModel,
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

    @classmethod
    def from_model(
        cls, model: PreTrainedModel, processor: Self1EProcessor | None = None, **kwargs
    ) -> "Self1EPredictor":
        """A predictor for `model` with `processor`, or else with the processor saved beside the model's weights
        (see [`load_saved_processor`]). `kwargs` go to the constructor."""
        return cls(model, load_saved_processor(model) if processor is None else processor, **kwargs)

    def segment(
        self,
        images,
        prompts=None,
        *,
        classes: str | Sequence[str] | None = None,
        threshold: float = 0.5,
        prompt_type: str = "short",
        return_probabilities: bool = False,
        show_progress: bool = False,
        **processor_options,
    ) -> "SegmentationResult | list[SegmentationResult]":
        r"""
        Segments what `prompts` describe (referring segmentation) or, with `classes`, every pixel into one of the
        classes or background (open-vocabulary semantic segmentation, paper Sec. 4.2.4).

        Args:
            images (`ImageInput` or `list[ImageInput]`):
                A PIL image, array, tensor or path, or a list of them (a 4-D array or tensor is a list of images).
                Arrays and tensors are `HxW`, `HxWxC` or `CxHxW`; a shape that reads both ways, such as `(3, 64, 3)`,
                needs `input_data_format` (see [`Self1EImageProcessor`]).
            prompts (`str`, `list[dict]`, or a list of them, *optional*):
                Referring expressions or class names (`prompt_type="short"`), full-sentence instructions
                (`prompt_type="instruction"`), or conversations whose assistant turn holds `[SEG]`. For one image, a
                prompt or a list of prompts; for a list of images, one such entry per image. A string is one prompt
                (never split into characters).
            classes (`str` or `Sequence[str]`, *optional*):
                Instead of `prompts`: class names asked about every image (a list, or one comma-separated string),
                which must differ once surrounding spaces are stripped. Each pixel goes to its most probable class;
                pixels where no class passes `threshold` are background.
            threshold (`float`, *optional*, defaults to 0.5):
                Probability, strictly between 0 and 1, above which a pixel belongs to a mask.
            prompt_type (`str`, *optional*, defaults to `"short"`):
                `"short"` or `"instruction"`, see `prompts`.
            return_probabilities (`bool`, *optional*, defaults to `False`):
                Also return every mask's full-size probabilities (4 bytes per pixel of every mask: unlike the masks,
                not bounded by `max_postprocess_bytes`).
            show_progress (`bool`, *optional*, defaults to `False`):
                Show a progress bar when the prompts run through the language model in several chunks.
            processor_options:
                Options of the processor: `min_tiles`, `max_tiles`, `use_thumbnail`, `max_image_pixels` (`None`: no
                limit), `input_data_format`, `question_template`, `answer_template`, `chat_template`. Others raise a
                `TypeError`.

        Returns:
            [`SegmentationResult`] for one image, one mask per prompt (per `[SEG]` of a conversation) or class; a
            list of them for a list of images.

        Raises:
            `TypeError`, `ValueError` or `FileNotFoundError` for bad arguments, before the model runs.
        """
        check_threshold(threshold)
        check_processor_options(processor_options, "segment()", SEGMENT_OPTIONS)
        single_image = not is_image_batch(images)
        if classes is not None:
            if prompts is not None:
                raise ValueError("pass either prompts or classes, not both")
            prompts = class_prompts(check_classes(classes), images, single_image)
        elif prompts is None:
            raise ValueError("prompts is required: what should be segmented?")
        inputs = self.preprocess(images, prompts, prompt_type=prompt_type, **processor_options)
        results = self.postprocess(
            inputs,
            self.mask_logits(inputs, show_progress),
            prompt_labels(prompts, single_image),
            threshold=threshold,
            semantic=classes is not None,
            return_probabilities=return_probabilities,
        )
        return results[0] if single_image else results

    def chat(self, image, question: str, max_new_tokens: int = 64, **generate_kwargs) -> str:
        r"""
        Answers `question` about `image` in free form, decoding causally like any chat model.

        Args:
            image (`ImageInput`):
                A PIL image, array, tensor or path.
            question (`str`):
                The user's question.
            max_new_tokens (`int`, *optional*, defaults to 64):
                The longest answer, in tokens.
            generate_kwargs:
                Further options of `generate()` (`do_sample`, ...).

        Returns:
            `str`: the answer, special tokens left out (`[SEG]` stays: it is not one).
        """
        text = self.processor.render_chat_prompt(question)
        inputs = self.processor(images=[image], text=[text], return_tensors="pt").to(input_device(self.model))
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        model_inputs = {key: inputs[key] for key in ("input_ids", "attention_mask", "pixel_values")}
        with torch.inference_mode():
            generated = self.model.generate(**model_inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
        answer = generated[0, inputs["input_ids"].shape[1] :]
        return self.processor.tokenizer.decode(answer, skip_special_tokens=True).strip()

    def segment_answer(self, image, question: str, answer: str, threshold: float = 0.5) -> SegmentationResult:
        r"""
        Segments each `[SEG]` of an answer (e.g. from [`~Self1EPredictor.chat`]), read with the segmentation
        attention mask in a second forward pass over the question and the answer.

        Args:
            image (`ImageInput`):
                The image the question was about.
            question (`str`):
                The user's question.
            answer (`str`):
                The assistant's answer, with at least one `[SEG]`.
            threshold (`float`, *optional*, defaults to 0.5):
                Probability, strictly between 0 and 1, above which a pixel belongs to a mask.

        Returns:
            [`SegmentationResult`]: one mask per `[SEG]`, named `"{answer} [index]"`.
        """
        if SEG_TOKEN not in answer:
            raise ValueError(f"answer contains no {SEG_TOKEN} token, so there is nothing to segment: {answer!r}")
        conversation = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer},
        ]
        result = self.segment(image, [conversation], threshold=threshold)
        result.prompts = [f"{answer} [{index}]" for index in range(len(result.packed_masks))]
        return result

    def preprocess(self, images, prompts, prompt_type: str = "short", **processor_options) -> BatchFeature:
        r"""
        [`~Self1EProcessor.prepare_segmentation_inputs`], refusing prompts longer than the language model can read.

        Args:
            images, prompts, prompt_type, processor_options:
                As in [`~Self1EPredictor.segment`].

        Returns:
            [`BatchFeature`]: the processor's inputs, one row per prompt.
        """
        inputs = self.processor.prepare_segmentation_inputs(
            images, prompts, prompt_type=prompt_type, **processor_options
        )
        self._check_length(inputs)
        return inputs

    def mask_logits(self, inputs: Mapping, show_progress: bool = False) -> list[torch.FloatTensor]:
        r"""
        Runs the model on prepared inputs: the vision tower once for all images, then the prompts through the language
        model in chunks of at most `max_batch_tokens` padded tokens.

        Args:
            inputs (`Mapping`):
                The output of [`~Self1EPredictor.preprocess`] (or of [`~Self1EProcessor.merge_segmentation_inputs`]).
            show_progress (`bool`, *optional*, defaults to `False`):
                Show a progress bar when there are several chunks.

        Returns:
            `list[torch.FloatTensor]`: per prompt, its `(num_masks, height, width)` mask logits on the tile canvas, in
            float32 on the CPU.
        """
        model = self.model
        logits = []
        with torch.inference_mode():
            pixel_values = inputs["pixel_values"].to(device=input_device(model), dtype=model.dtype)
            image_features = model.get_segmentation_image_features(pixel_values)
            for rows in self._prompt_chunks(inputs, show_progress):
                logits.extend(self._chunk_mask_logits(inputs, image_features, rows))
        return logits

    def postprocess(
        self,
        inputs: Mapping,
        mask_logits: Sequence[torch.Tensor],
        labels: Sequence[str],
        threshold: float = 0.5,
        semantic: bool = False,
        return_probabilities: bool = False,
    ) -> list[SegmentationResult]:
        r"""
        [`~Self1EProcessor.post_process_segmentation`] of every image, its masks named after their prompts.

        Args:
            inputs (`Mapping`):
                The prepared inputs (`original_sizes` and `prompt_to_image` are read).
            mask_logits (`Sequence[torch.Tensor]`):
                From [`~Self1EPredictor.mask_logits`].
            labels (`Sequence[str]`):
                The label of each prompt (see [`prompt_labels`]), which names its masks.
            threshold, semantic, return_probabilities:
                See [`~Self1EProcessor.post_process_segmentation`].

        Returns:
            `list[SegmentationResult]`: one per image.
        """
        predictions = self.processor.post_process_segmentation(
            mask_logits,
            inputs["original_sizes"],
            inputs["prompt_to_image"],
            threshold=threshold,
            semantic=semantic,
            return_probabilities=return_probabilities,
            prompt_names=labels,
            max_chunk_bytes=self.max_postprocess_bytes,
        )
        rows_per_image = prompts_by_image(inputs["prompt_to_image"], len(predictions))
        return [
            SegmentationResult.from_prediction(names_of_masks(labels, mask_logits, rows), prediction)
            for rows, prediction in zip(rows_per_image, predictions)
        ]

    def _prompt_chunks(self, inputs: Mapping, show_progress: bool) -> Iterable[range]:
        """Consecutive prompts whose padded tokens stay within `max_batch_tokens` (one prompt at least)."""
        num_prompts, length = inputs["input_ids"].shape
        chunk_size = max(1, self.max_batch_tokens // length)
        chunks = [range(start, min(start + chunk_size, num_prompts)) for start in range(0, num_prompts, chunk_size)]
        if show_progress and len(chunks) > 1:
            return logging.tqdm(chunks, desc="segmenting", unit="chunk")
        return chunks

    def _chunk_mask_logits(self, inputs: Mapping, image_features, rows: range) -> list[torch.FloatTensor]:
        """The mask logits of the prompts `rows`; `image_features` ([`Self1EImageFeatures`]) hold every image once."""
        device = input_device(self.model)
        length = int(inputs["attention_mask"][rows.start : rows.stop].sum(-1).max())
        outputs = self.model(
            input_ids=inputs["input_ids"][rows.start : rows.stop, :length].to(device),
            attention_mask=inputs["attention_mask"][rows.start : rows.stop, :length].to(device),
            image_features=image_features,
            tile_grids=inputs["tile_grids"],
            has_thumbnail=inputs["has_thumbnail"],
            prompt_to_image=inputs["prompt_to_image"][rows.start : rows.stop],
            logits_to_keep=1,
        )
        return [mask.float().cpu() for mask in outputs.pred_masks]

    def _check_length(self, inputs: Mapping) -> None:
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


def input_device(model: PreTrainedModel) -> torch.device:
    """Where the model's inputs go: accelerate's execution device when `device_map` dispatched the model (weights
    offloaded to the CPU or disk sit on the meta device, which `model.device` may then report), else the model's."""
    device = getattr(getattr(model, "_hf_hook", None), "execution_device", None)
    return model.device if device is None else torch.device(device)


def load_saved_processor(model: PreTrainedModel) -> Self1EProcessor:
    """The processor saved beside `model`'s weights, loaded from the folder or Hub repository the model came from."""
    if not model.name_or_path:
        raise ValueError("this model was not loaded from a folder: pass processor=Self1EProcessor(...)")
    # This class is remote code only if the caller loaded the folder with `trust_remote_code=True`; the processor's
    # tokenizer resolves the same folder's config, which must not ask that question again.
    loaded_as_remote_code = type(model).__module__.startswith(f"{TRANSFORMERS_DYNAMIC_MODULE_NAME}.")
    return Self1EProcessor.from_pretrained(model.name_or_path, trust_remote_code=loaded_as_remote_code)


def is_image_batch(images) -> bool:
    """Whether `images` holds several images: a list or tuple, or a 4-D array or tensor."""
    return isinstance(images, (list, tuple)) or (isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4)


def check_processor_options(options: Mapping, caller: str, own_options: tuple[str, ...]) -> None:
    """Refuses keyword options for the processor that are not `SEGMENT_PROCESSOR_OPTIONS`, naming them and what
    `caller` accepts (`own_options` and the processor options)."""
    unknown = sorted(set(options) - set(SEGMENT_PROCESSOR_OPTIONS))
    if unknown:
        raise TypeError(
            f"{caller} got unexpected keyword arguments {unknown}; it accepts "
            f"{', '.join(own_options + SEGMENT_PROCESSOR_OPTIONS)}"
        )


def check_classes(classes) -> list[str]:
    """The class names of `classes=` (a list, or one comma-separated string), each named once."""
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


def class_prompts(classes: list[str], images, single_image: bool) -> list[str] | list[list[str]]:
    """The prompts that ask about every class in every image."""
    return classes if single_image else [classes for _ in range(len(images))]


def prompt_labels(prompts, single_image: bool) -> list[str]:
    """The label of every prompt, image by image as the processor orders them: its text, or `"conversation"`."""
    labels = []
    for entry in [prompts] if single_image else prompts:
        entries = [entry] if isinstance(entry, str) or is_conversation(entry) else entry
        labels.extend(prompt if isinstance(prompt, str) else "conversation" for prompt in entries)
    return labels


__all__ = ["SegmentationResult", "Self1EPredictor"]
