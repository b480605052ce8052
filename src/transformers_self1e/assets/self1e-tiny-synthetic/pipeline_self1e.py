"""`pipeline("image-segmentation", model=..., trust_remote_code=True)` for SELF1E: segments what a text says."""

import numpy as np
import PIL.Image
from transformers import Pipeline

class Self1EImageSegmentationPipeline(Pipeline):
    """Text-prompted image segmentation with a SELF1E model.

    Call it with an image (PIL image, array, path) and `prompt="the dog on the left"`, `prompts=[...]` or
    `classes=["sky", "road", ...]` (an open-vocabulary semantic map), plus an optional `threshold` (probability,
    default 0.5). It returns transformers' standard image-segmentation output, one entry per prompt or class:
    `[{"label": str, "score": float, "mask": PIL.Image (mode "L", 255 inside)}]`, masks at the image's own size.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, prompt=None, prompts=None, classes=None, threshold=None, **images_kwargs):
        if prompt is not None and prompts is not None:
            raise ValueError("pass either prompt or prompts, not both")
        preprocess_params = {}
        if prompt is not None or prompts is not None:
            preprocess_params["prompts"] = [prompt] if prompt is not None else list(prompts)
        if classes is not None:
            preprocess_params["classes"] = classes
        forward_params = dict(images_kwargs)
        if threshold is not None:
            forward_params["threshold"] = threshold
        return preprocess_params, forward_params, {}

    def preprocess(self, image, prompts=None, classes=None):
        if prompts is None and classes is None:
            raise ValueError("the image-segmentation pipeline of SELF1E needs prompt=, prompts= or classes=")
        return {"image": image, "prompts": prompts, "classes": classes}

    def _forward(self, model_inputs, **segment_kwargs):
        return self.model.segment(
            model_inputs["image"],
            model_inputs["prompts"],
            classes=model_inputs["classes"],
            processor=self.processor,
            **segment_kwargs,
        )

    def postprocess(self, result) -> list[dict]:
        return [
            {
                "label": label,
                "score": float(score),
                "mask": PIL.Image.fromarray(mask.numpy().astype(np.uint8) * 255, mode="L"),
            }
            for label, score, mask in zip(result.prompts, result.scores, result.masks)
        ]


__all__ = ["Self1EImageSegmentationPipeline"]
