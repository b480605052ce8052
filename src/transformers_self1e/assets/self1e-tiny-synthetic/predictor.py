"""`Self1EPredictor`: images and sentences in, masks at each image's own size out. It hides the processor, runs the
vision tower once per image however many prompts ask about it, and batches the prompts through the language model."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers.utils import logging

from .mask_postprocessing import label_map_from_logits, logits_to_prediction
from .processing_self1e import Self1EProcessor, is_conversation
from .prompts_self1e import SEG_TOKEN

if TYPE_CHECKING:
    from .modeling_self1e import Self1EForSegmentation

logger = logging.get_logger(__name__)

DEFAULT_MAX_BATCH_TOKENS = 32768


@dataclass
class SegmentationResult:
    """Everything predicted for one image, at the image's original size.

    Attributes:
        prompts: the prompt (or class name) of each mask.
        masks: `(num_prompts, height, width)` booleans.
        scores: `(num_prompts,)` mean probability inside each mask (0 for an empty mask).
        no_target: `(num_prompts,)` True where nothing in the image matches the prompt (empty mask).
        probabilities: `(num_prompts, height, width)` per-prompt probabilities, when requested.
        label_map: with `classes=`, `(height, width)` index of each pixel's class in `prompts`, -1 for background;
            `masks` are then `label_map == k`.
    """

    prompts: list[str]
    masks: torch.BoolTensor
    scores: torch.FloatTensor
    no_target: torch.BoolTensor
    probabilities: torch.FloatTensor | None = None
    label_map: torch.LongTensor | None = None


class Self1EPredictor:
    """Segments images with a [`Self1EForSegmentation`] and its [`Self1EProcessor`].

    Args:
        model: the model (any dtype and device; inputs follow it).
        processor: the processor saved with the model.
        max_batch_tokens: prompts about one image are run through the language model in chunks of at most this many
            (padded) tokens, which bounds memory when asking about many classes.
    """

    def __init__(
        self,
        model: "Self1EForSegmentation",
        processor: Self1EProcessor,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        processor.check_model_config(model.config)
        self.model = model
        self.processor = processor
        self.max_batch_tokens = max_batch_tokens

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
            images: PIL image, array, tensor or path, or a list of them.
            prompts: referring expressions / class names (`prompt_type="short"`), full-sentence instructions
                (`prompt_type="instruction"`), or conversations whose assistant turn holds `[SEG]`.
            classes: class names asked about every image; each pixel goes to the most probable class, pixels where no
                class passes `threshold` are background.
            threshold: probability above which a pixel belongs to a mask.
            show_progress: show a progress bar when the prompts run through the language model in several chunks.
            images_kwargs: image processor overrides (`max_tiles`, `use_thumbnail`, `max_image_pixels`, ...).

        Returns:
            A [`SegmentationResult`] for a single image, a list of them for a list of images.
        """
        single_image = not isinstance(images, (list, tuple))
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
        for image_index, (height, width) in enumerate(inputs["original_sizes"].tolist()):
            rows = [row for row, image in enumerate(prompt_to_image) if image == image_index]
            image_logits = torch.cat([logits[row] for row in rows])
            image_labels = [labels[row] for row in rows]
            if classes is not None:
                results.append(_semantic_result(image_labels, image_logits, (height, width), threshold))
                continue
            prediction = logits_to_prediction(image_logits, (height, width), threshold, return_probabilities)
            results.append(
                SegmentationResult(
                    image_labels, prediction.masks, prediction.scores, prediction.no_target, prediction.probabilities
                )
            )
        return results[0] if single_image else results

    def chat(self, image, question: str, max_new_tokens: int = 64, **generate_kwargs) -> str:
        """The model's free-form answer about `image`, decoded causally like any chat model."""
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
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
        result.prompts = [f"{answer} [{index}]" for index in range(result.masks.shape[0])]
        return result

    def _check_length(self, inputs) -> None:
        limit = getattr(self.model.config.text_config, "max_position_embeddings", None)
        length = inputs["input_ids"].shape[1]
        if limit is not None and length > limit:
            raise ValueError(
                f"the prompt with its {int(inputs['num_tiles'].max())} image tiles is {length} tokens long, more than "
                f"the language model's {limit} positions: lower max_tiles"
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
                    image_features=features.select_tiles(sample_tiles[tile_starts[rows.start] : tile_starts[rows.stop]]),
                    tile_grids=[grids[prompt_to_image[row]] for row in rows],
                    has_thumbnail=[thumbnails[prompt_to_image[row]] for row in rows],
                    logits_to_keep=1,
                )
                logits.extend(mask.float().cpu() for mask in outputs.pred_masks)
        return logits


def _check_classes(classes) -> list[str]:
    if isinstance(classes, str):
        classes = [name.strip() for name in classes.split(",")]
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ValueError("classes must be a non-empty list of class names")
    for index, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"classes[{index}] must be a non-empty class name, got {name!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {list(classes)}")
    return list(classes)


def _prompt_labels(prompts, single_image: bool) -> list[str]:
    """The label of every prompt row, flattened in the processor's order (image by image)."""
    per_image = [prompts] if single_image else prompts
    labels = []
    for entry in per_image:
        entries = [entry] if isinstance(entry, str) or is_conversation(entry) else list(entry)
        labels.extend(prompt if isinstance(prompt, str) else "conversation" for prompt in entries)
    return labels


def _semantic_result(classes: list[str], logits: torch.Tensor, size: tuple[int, int], threshold: float):
    label_map = label_map_from_logits(logits, size, threshold)
    masks = label_map[None] == torch.arange(len(classes))[:, None, None]
    probabilities = logits_to_prediction(logits, size, threshold, return_probabilities=True).probabilities
    areas = masks.flatten(1).sum(-1)
    scores = (probabilities * masks).flatten(1).sum(-1) / areas.clamp_min(1)
    return SegmentationResult(classes, masks, scores, areas == 0, probabilities, label_map)


__all__ = ["SegmentationResult", "Self1EPredictor"]
