"""transformers-self1e: SELF1E segmentation on Hugging Face transformers.

Importing the package registers the SELF1E config, model, image processor and processor with transformers' auto
classes, and marks them for `save_pretrained` to write an `auto_map`, so saved folders also load with
`trust_remote_code=True` alone.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from .modeling import (
    MaskPrediction,
    Self1EConfig,
    Self1EForSegmentation,
    Self1EImageFeatures,
    Self1EImageProcessor,
    Self1EPreTrainedModel,
    Self1EProcessor,
    Self1ESegmentationHead,
    Self1ESegmentationOutput,
    build_segmentation_attention_mask,
)

AutoConfig.register(Self1EConfig.model_type, Self1EConfig, exist_ok=True)
AutoModel.register(Self1EConfig, Self1EForSegmentation, exist_ok=True)
AutoImageProcessor.register(Self1EConfig, image_processor_classes={"pil": Self1EImageProcessor}, exist_ok=True)
AutoProcessor.register(Self1EConfig, Self1EProcessor, exist_ok=True)
Self1EConfig.register_for_auto_class()
Self1EForSegmentation.register_for_auto_class("AutoModel")
Self1EImageProcessor.register_for_auto_class("AutoImageProcessor")
Self1EProcessor.register_for_auto_class("AutoProcessor")

__version__ = "0.1.0"

__all__ = [
    "MaskPrediction",
    "Self1EConfig",
    "Self1EForSegmentation",
    "Self1EImageFeatures",
    "Self1EImageProcessor",
    "Self1EPreTrainedModel",
    "Self1EProcessor",
    "Self1ESegmentationHead",
    "Self1ESegmentationOutput",
    "build_segmentation_attention_mask",
]
