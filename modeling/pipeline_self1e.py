"""`pipeline("image-segmentation", model=..., trust_remote_code=True)` for SELF1E: segments what a text says."""

from collections.abc import Sequence

import numpy as np
import PIL.Image
from transformers import Pipeline

from .mask_postprocessing import check_threshold
from .predictor import Self1EPredictor, check_classes, check_processor_options, prompt_labels
from .processing_self1e import names_of_masks, prompts_by_image

# What a call takes besides the processor options, named when an unknown option is refused.
_PIPELINE_OPTIONS = ("prompt", "prompts", "classes", "threshold", "prompt_type", "batch_size")


class Self1EImageSegmentationPipeline(Pipeline):
    r"""
    Text-prompted image segmentation with a SELF1E model: masks of what a prompt describes, or an open-vocabulary
    semantic map of `classes`, in transformers' standard image-segmentation output.

    `preprocess` loads the image and prepares its prompts with the processor, `_forward` runs the model (with
    `batch_size`, on the images of a batch together: the vision tower once per image, all their prompts batched
    through the language model), and `postprocess` turns the mask logits into masks with the processor.

    Example:

    ```python
    >>> from transformers import pipeline

    >>> segmenter = pipeline("image-segmentation", model="org/self1e-8b", trust_remote_code=True)
    >>> outputs = segmenter("street.jpg", prompts=["the red car", "the person on the left"])
    >>> [output["label"] for output in outputs]
    ['the red car', 'the person on the left']
    >>> outputs[0]["mask"].mode  # 255 inside the mask, at the image's own size
    'L'
    ```
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.predictor = Self1EPredictor(self.model, self.processor)

    def __call__(self, inputs, **kwargs) -> list[dict] | list[list[dict]]:
        r"""
        Segments what the prompts describe in each image.

        Args:
            inputs (`str`, `PIL.Image.Image`, `np.ndarray` or a list of them):
                An image (path, PIL image or array) or a list of images; every image is asked the same prompts.
            prompt (`str`, *optional*):
                One prompt: a referring expression, or a full-sentence instruction with
                `prompt_type="instruction"`.
            prompts (`str` or `list[str]`, *optional*):
                Several prompts (a string is one prompt).
            classes (`str` or `list[str]`, *optional*):
                Class names instead of prompts (a list, or one comma-separated string): each pixel goes to its most
                probable class, or to none where no class passes `threshold`.
            threshold (`float`, *optional*, defaults to 0.5):
                Probability, strictly between 0 and 1, above which a pixel belongs to a mask.
            prompt_type (`str`, *optional*, defaults to `"short"`):
                `"short"` or `"instruction"`.
            kwargs:
                `batch_size`, and the processor options of [`Self1EPredictor.segment`] (`max_tiles`,
                `max_image_pixels`, ...).

        Returns:
            For one image, a list with one dictionary per prompt or class, holding

            - **label** (`str`) -- The prompt or class.
            - **score** (`float`) -- The mean probability inside the mask (0 for an empty mask).
            - **mask** (`PIL.Image.Image`) -- Mode `"L"`, 255 inside the mask, at the image's own size.

            For a list of images, a list of such lists.
        """
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self, prompt=None, prompts=None, classes=None, threshold=None, prompt_type=None, **processor_options
    ) -> tuple[dict, dict, dict]:
        if prompt is not None and prompts is not None:
            raise ValueError("pass either prompt or prompts, not both")
        check_processor_options(processor_options, "the image-segmentation pipeline", _PIPELINE_OPTIONS)
        preprocess_params, postprocess_params = dict(processor_options), {}
        if prompt_type is not None:
            preprocess_params["prompt_type"] = prompt_type
        prompts = prompt if prompt is not None else prompts
        if classes is not None:
            if prompts is not None:
                raise ValueError("pass either prompts or classes, not both")
            prompts = check_classes(classes)
            postprocess_params["semantic"] = True
        if prompts is not None:
            preprocess_params["prompts"] = prompts
        if threshold is not None:
            check_threshold(threshold)
            postprocess_params["threshold"] = threshold
        return preprocess_params, {}, postprocess_params

    def preprocess(self, image, prompts=None, prompt_type: str = "short", **processor_options) -> dict:
        """Loads the image, checked (type, layout, size), and prepares its prompts with the processor."""
        if prompts is None:
            raise ValueError("the image-segmentation pipeline of SELF1E needs prompt=, prompts= or classes=")
        image_processor = self.processor.image_processor
        image = image_processor.load_images(
            image,
            processor_options.get("max_image_pixels", image_processor.max_image_pixels),
            processor_options.get("input_data_format"),
            name="image",
        )
        if isinstance(image, list):
            raise ValueError(
                f"the pipeline takes one image per input, got a batch of {len(image)} images: pass a list of images"
            )
        inputs = self.predictor.preprocess(image, prompts, prompt_type=prompt_type, **processor_options)
        # Under one key, the inputs are not a tensor that the default collator would pad row by row (each image has
        # its own numbers of prompts and tiles): with `batch_size`, `_forward` gets the list of them.
        return {"inputs": inputs, "prompt_labels": prompt_labels(prompts, single_image=True)}

    def _forward(self, model_inputs: dict) -> dict:
        """The mask logits of each prompt, grouped by image; the images of a batch run through the model at once."""
        inputs = model_inputs["inputs"]
        batched = isinstance(inputs, list)
        if batched:
            inputs = self.processor.merge_segmentation_inputs(inputs)
        mask_logits = self.predictor.mask_logits(inputs)
        rows_per_image = prompts_by_image(inputs["prompt_to_image"], len(inputs["original_sizes"]))
        mask_logits_per_image = [[mask_logits[row] for row in rows] for rows in rows_per_image]
        # With `batch_size`, transformers splits these back into one image's outputs (first key: a list per image).
        return {
            "mask_logits": mask_logits_per_image if batched else mask_logits_per_image[0],
            "original_sizes": inputs["original_sizes"],
            "prompt_labels": model_inputs["prompt_labels"],
        }

    def postprocess(self, model_outputs: dict, threshold: float = 0.5, semantic: bool = False) -> list[dict]:
        """One image's masks at its own size, with the processor: `{"label", "score", "mask"}` per prompt or class."""
        mask_logits: Sequence = model_outputs["mask_logits"]
        labels = model_outputs["prompt_labels"]
        (prediction,) = self.processor.post_process_segmentation(
            mask_logits,
            model_outputs["original_sizes"],
            [0] * len(mask_logits),
            threshold=threshold,
            semantic=semantic,
            prompt_names=labels,
            max_chunk_bytes=self.predictor.max_postprocess_bytes,
        )
        names = names_of_masks(labels, mask_logits, range(len(mask_logits)))
        return [
            {"label": name, "score": float(score), "mask": PIL.Image.fromarray(mask.numpy().astype(np.uint8) * 255)}
            for name, score, mask in zip(names, prediction.scores, prediction.masks)
        ]


__all__ = ["Self1EImageSegmentationPipeline"]
