"""transformers-self1e: SELF1E segmentation on Hugging Face transformers.

Importing the package registers `Self1EConfig`/`Self1EForSegmentation` with `AutoConfig`/`AutoModel`, and marks them
for `save_pretrained` to write an `auto_map`, so saved folders also load with `trust_remote_code=True` alone.
"""

from transformers import AutoConfig, AutoModel

from .modeling import (
    Self1EConfig,
    Self1EForSegmentation,
    Self1EImageFeatures,
    Self1EPreTrainedModel,
    Self1ESegmentationHead,
    Self1ESegmentationOutput,
    build_segmentation_attention_mask,
)

AutoConfig.register(Self1EConfig.model_type, Self1EConfig, exist_ok=True)
AutoModel.register(Self1EConfig, Self1EForSegmentation, exist_ok=True)
Self1EConfig.register_for_auto_class()
Self1EForSegmentation.register_for_auto_class("AutoModel")

__version__ = "0.1.0"

__all__ = [
    "Self1EConfig",
    "Self1EForSegmentation",
    "Self1EImageFeatures",
    "Self1EPreTrainedModel",
    "Self1ESegmentationHead",
    "Self1ESegmentationOutput",
    "build_segmentation_attention_mask",
]
