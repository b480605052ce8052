"""`pipeline("image-segmentation", model=..., trust_remote_code=True)` for SELF1E: segments what a text says."""

import numpy as np
import PIL.Image
from transformers import Pipeline

from .predictor import SegmentationResult, check_segment_options, check_threshold

# Options that also decide how `preprocess` loads an image.
_LOAD_OPTIONS = ("max_image_pixels", "input_data_format")
# What a call takes besides the processor options, named when an unknown option is refused.
_PIPELINE_OPTIONS = ("prompt", "prompts", "classes", "threshold", "prompt_type", "batch_size")


class Self1EImageSegmentationPipeline(Pipeline):
    """Text-prompted image segmentation with a SELF1E model.

    Call it with an image (PIL image, array, path) or a list of them, and `prompt="the dog on the left"`,
    `prompts=[...]` or `classes=["sky", "road", ...]` (an open-vocabulary semantic map), asked about every image, plus
    an optional `threshold` (probability strictly between 0 and 1, default 0.5) and the options of
    [`Self1EPredictor.segment`] (`max_tiles`, `max_image_pixels`, ...). `prompts` follows `segment()`: a string is one
    prompt, a list is several. It returns transformers' standard image-segmentation output, one entry per prompt or
    class: `[{"label": str, "score": float, "mask": PIL.Image (mode "L", 255 inside)}]`, masks at the image's own
    size; a list of them for a list of images. With `batch_size`, the images of a batch go through the model together
    (the vision tower once per image, all their prompts batched through the language model).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(
        self, prompt=None, prompts=None, classes=None, threshold=None, prompt_type=None, **options
    ) -> tuple[dict, dict, dict]:
        if prompt is not None and prompts is not None:
            raise ValueError("pass either prompt or prompts, not both")
        check_segment_options(options, "the image-segmentation pipeline", _PIPELINE_OPTIONS)
        forward_params = dict(options)
        if prompt_type is not None:
            forward_params["prompt_type"] = prompt_type
        if prompt is not None or prompts is not None:
            forward_params["prompts"] = prompt if prompt is not None else prompts
        if classes is not None:
            forward_params["classes"] = classes
        if threshold is not None:
            check_threshold(threshold)
            forward_params["threshold"] = threshold
        preprocess_params = {key: options[key] for key in _LOAD_OPTIONS if key in options}
        return preprocess_params, forward_params, {}

    def preprocess(self, image, **load_options) -> dict:
        """Loads the image as an RGB PIL image, checked (type, layout, size) before the model runs."""
        image_processor = self.processor.image_processor
        loaded = image_processor.load_images(
            image,
            load_options.get("max_image_pixels", image_processor.max_image_pixels),
            load_options.get("input_data_format"),
            name="image",
        )
        if isinstance(loaded, list):
            raise ValueError(
                f"the pipeline takes one image per input, got a batch of {len(loaded)} images: pass a list of images"
            )
        return {"image": loaded}

    def _forward(self, model_inputs: dict, prompts=None, classes=None, **segment_kwargs) -> dict:
        """[`Self1EPredictor.segment`] on the image, or on the list of images the batch collator made."""
        if prompts is None and classes is None:
            raise ValueError("the image-segmentation pipeline of SELF1E needs prompt=, prompts= or classes=")
        images = model_inputs["image"]
        batched = isinstance(images, list)
        images = images if batched else [images]
        results = self.model.segment(
            images,
            None if prompts is None else [prompts] * len(images),
            classes=classes,
            processor=self.processor,
            **segment_kwargs,
        )
        return {"result": results if batched else results[0]}

    def postprocess(self, model_outputs: dict) -> list[dict]:
        result: SegmentationResult = model_outputs["result"]
        return [
            {
                "label": label,
                "score": float(score),
                "mask": PIL.Image.fromarray(mask.numpy().astype(np.uint8) * 255),
            }
            for label, score, mask in zip(result.prompts, result.scores, result.masks)
        ]


__all__ = ["Self1EImageSegmentationPipeline"]
