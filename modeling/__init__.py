"""SELF1E remote code: exactly the files uploaded to the Hub, importable with torch and transformers alone."""

from .attention_mask import build_segmentation_attention_mask
from .configuration_self1e import Self1EConfig
from .modeling_self1e import Self1EForSegmentation, Self1EImageFeatures, Self1EPreTrainedModel, Self1ESegmentationOutput
from .segmentation_head import Self1ESegmentationHead, pixel_unshuffle, stitch_tiles

__all__ = [
    "Self1EConfig",
    "Self1EForSegmentation",
    "Self1EImageFeatures",
    "Self1EPreTrainedModel",
    "Self1ESegmentationHead",
    "Self1ESegmentationOutput",
    "build_segmentation_attention_mask",
    "pixel_unshuffle",
    "stitch_tiles",
]
