"""SELF1E remote code: exactly the files uploaded to the Hub, importable with torch and transformers alone."""

from .attention_mask import build_segmentation_attention_mask
from .configuration_self1e import Self1EConfig
from .image_processing_self1e import Self1EImageProcessor
from .mask_postprocessing import MaskPrediction, label_map_from_logits, logits_to_prediction
from .modeling_self1e import (
    Self1EForSegmentation,
    Self1EImageFeatures,
    Self1EPreTrainedModel,
    Self1ESegmentationOutput,
)
from .processing_self1e import Self1EProcessor
from .segmentation_head import Self1ESegmentationHead, pixel_unshuffle, stitch_tiles

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
    "label_map_from_logits",
    "logits_to_prediction",
    "pixel_unshuffle",
    "stitch_tiles",
]
