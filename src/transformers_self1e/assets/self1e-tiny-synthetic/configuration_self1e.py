"""Configuration of SELF1E: InternVL3 (InternViT + Qwen LLM) that segments with a single `[SEG]` token."""

import os
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.internvl.configuration_internvl import InternVLConfig, InternVLVisionConfig

ImageFeaturePath = Literal["llm_low_res", "high_res", "residual_refill", "residual_amplifier"]
SegmentationAttention = Literal["causal", "bidirectional_image", "bidirectional_image_with_seg", "bidirectional"]

IMAGE_FEATURE_PATHS: tuple[str, ...] = ImageFeaturePath.__args__
SEGMENTATION_ATTENTIONS: tuple[str, ...] = SegmentationAttention.__args__


@strict
class Self1EConfig(InternVLConfig):
    r"""
    Configuration of [`Self1EForSegmentation`]. It is an [`InternVLConfig`] (vision tower, pixel-shuffle projector and
    any causal language model as `text_config`) plus the settings of the SELF1E segmentation head and losses.

    seg_token_id (`int`, *optional*):
        Id of the `[SEG]` token. The mask of a `[SEG]` token is read from the hidden state that predicts it.
    image_feature_path (`str`, *optional*, defaults to `"residual_amplifier"`):
        Which image features produce the mask (paper Table 5/6): `"llm_low_res"` (LLM image tokens only, compressed
        grid), `"high_res"` (self-replicated ViT features, ViT grid), `"residual_refill"` (high-res features plus the
        upsampled LLM residual, RFR, Eq. 2-3) or `"residual_amplifier"` (RFR with the MLP-with-pixel-unshuffle
        amplifier, RFA, Eq. 4-6; masks at twice the ViT grid).
    segmentation_attention (`str`, *optional*, defaults to `"bidirectional_image_with_seg"`):
        Attention mask of samples that contain `[SEG]` (paper Table 7): `"causal"`, `"bidirectional_image"` (image
        tokens see each other), `"bidirectional_image_with_seg"` (and also see the `[SEG]` tokens) or
        `"bidirectional"` (every token sees every token). Samples without `[SEG]` always stay causal.
    text_loss_weight (`float`, *optional*, defaults to 1.0):
        Weight of the next-token cross-entropy.
    bce_loss_weight (`float`, *optional*, defaults to 2.0):
        Weight of the per-pixel sigmoid binary cross-entropy of the masks.
    dice_loss_weight (`float`, *optional*, defaults to 0.5):
        Weight of the Dice loss of the masks.
    use_low_res_aux_loss (`bool`, *optional*, defaults to `True`):
        Also supervise the mask predicted from the LLM image features alone (before refilling), as the reference
        training does.
    gt_mask_short_side (`int`, *optional*, defaults to 128):
        Ground-truth masks whose short side is larger are bilinearly shrunk to this short side before the mask losses.
    """

    model_type = "self1e"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
        "vision_config": InternVLVisionConfig,
    }

    seg_token_id: int | None = None
    image_feature_path: ImageFeaturePath = "residual_amplifier"
    segmentation_attention: SegmentationAttention = "bidirectional_image_with_seg"
    text_loss_weight: float = 1.0
    bce_loss_weight: float = 2.0
    dice_loss_weight: float = 0.5
    use_low_res_aux_loss: bool = True
    gt_mask_short_side: int = 128
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Saved folders offer the SELF1E image-segmentation pipeline as remote code.
        if not getattr(self, "custom_pipelines", None):
            self.custom_pipelines = {
                "image-segmentation": {
                    "impl": "pipeline_self1e.Self1EImageSegmentationPipeline",
                    "pt": ["AutoModel"],
                    "tf": [],
                    "type": "multimodal",
                }
            }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "Self1EConfig":
        """
        Loads the config of a saved model like [`~PreTrainedConfig.from_pretrained`]; an invalid config raises a
        `ValueError` that names the model and the problem.
        """
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ValueError as error:
            raise ValueError(f"invalid config.json in {pretrained_model_name_or_path}: {error}") from error

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "Self1EConfig":
        """
        Builds a config from a saved dictionary (the content of `config.json`). Unlike the constructor, it requires
        `text_config` and `vision_config`: their defaults describe a 7B-size model, which a truncated or hand-written
        `config.json` would otherwise allocate without a word. Invalid values raise a `ValueError`.
        """
        missing = [key for key in cls.sub_configs_defaults if key not in config_dict and key not in kwargs]
        if missing:
            raise ValueError(
                f"the config has no {' and no '.join(map(repr, missing))}: a saved Self1E config must describe its "
                "language model (text_config) and its vision tower (vision_config)"
            )
        try:
            return super().from_dict(config_dict, **kwargs)
        except StrictDataclassError as error:
            raise ValueError(str(error.__cause__ or error)) from error

    @property
    def tile_size(self) -> int:
        """Side of a square image tile in pixels."""
        return int(self.vision_config.image_size[0])

    @property
    def vit_grid_size(self) -> int:
        """ViT patches along one side of a tile."""
        return self.tile_size // int(self.vision_config.patch_size[0])

    @property
    def shuffle_factor(self) -> int:
        """Pixel-shuffle factor per side (2 for `downsample_ratio=0.5`)."""
        return round(1 / self.downsample_ratio)

    @property
    def llm_grid_size(self) -> int:
        """LLM image tokens along one side of a tile."""
        return self.vit_grid_size // self.shuffle_factor

    @property
    def image_tokens_per_tile(self) -> int:
        """Image tokens the language model reads for one tile."""
        return self.llm_grid_size**2

    @property
    def mask_grid_size(self) -> int:
        """Mask logits along one side of a tile: the LLM grid, the ViT grid, or twice it with RFA."""
        if self.image_feature_path == "llm_low_res":
            return self.llm_grid_size
        if self.image_feature_path == "residual_amplifier":
            return self.vit_grid_size * self.shuffle_factor
        return self.vit_grid_size

    def validate_segmentation_settings(self):
        """Checks what the field types cannot express (the strict dataclass already checks the `Literal` fields)."""
        factor = 1 / self.downsample_ratio
        if factor != round(factor) or factor < 1:
            raise ValueError(f"downsample_ratio must be 1/k for an integer k, got {self.downsample_ratio}")
        if self.vit_grid_size % self.shuffle_factor:
            raise ValueError(
                f"the ViT grid ({self.vit_grid_size} patches per side) must be divisible by the pixel-shuffle "
                f"factor {self.shuffle_factor}"
            )
        if self.gt_mask_short_side < 1:
            raise ValueError(f"gt_mask_short_side must be positive, got {self.gt_mask_short_side}")


__all__ = ["Self1EConfig", "IMAGE_FEATURE_PATHS", "SEGMENTATION_ATTENTIONS"]
