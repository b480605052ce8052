"""Ready-made `Self1EConfig`s: InternVL3-1B/2B/8B-sized SELF1E models, and a tiny one for tests.

The real presets carry the architecture of the released InternVL3 checkpoints (numbers read from the `config.json` of
`OpenGVLab/InternVL3-{1B,2B,8B}` and their `-hf` conversions). They describe shapes only: no weights are downloaded.

Every preset takes keyword overrides. Top-level keys go to `Self1EConfig`; a dict given for `vision_config` or
`text_config` is merged into the preset's sub-config, so `tiny_config(text_config={"vocab_size": 120})` changes only
the vocabulary.
"""

from collections.abc import Callable
from typing import Any

from .modeling import Self1EConfig

# InternVL3 tokenizer (identical for 1B/2B/8B, see `added_tokens.json` of OpenGVLab/InternVL3-*): Qwen2.5's 151643
# regular tokens plus its specials 151643-151664, then InternVL's `<img>` 151665, `</img>` 151666, `<IMG_CONTEXT>`
# 151667, `<quad>` `</quad>` `<ref>` `</ref>` `<box>` `</box>` 151668-151673. So `len(tokenizer)` is 151674, which is
# also the released `vocab_size` (embedding rows).
INTERNVL3_VOCAB_SIZE = 151674
INTERNVL3_IMAGE_TOKEN_ID = 151667  # `<IMG_CONTEXT>`; `image_token_id` of the -hf configs
# `[SEG]` is the first token added after InternVL3's: `tokenizer.add_tokens(["[SEG]"])` on a tokenizer of length
# 151674 gives id 151674. The reference training also adds a leftover `[SEGT]` (151675) before resizing, so released
# SELF1E checkpoints have 151676 rows; their conversion reads the size from their config, not from these presets.
INTERNVL3_SEG_TOKEN_ID = 151674
# A SELF1E model's vocabulary is InternVL3's plus `[SEG]`, so that the presets describe models that can segment.
SELF1E_VOCAB_SIZE = INTERNVL3_VOCAB_SIZE + 1

# InternVL3's Qwen2.5 models all use `rope_theta` 1e6 with dynamic NTK scaling, factor 2 (`rope_scaling` in the
# released configs), RMSNorm eps 1e-6 and 32768 positions.
_INTERNVL3_ROPE = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1_000_000.0}
_INTERNVL3_MAX_POSITIONS = 32768
# 448-px tiles of 14-px patches, pixel shuffle 0.5: (448 / 14 / 2) ** 2 = 256 LLM tokens per tile.
_INTERNVL3_IMAGE_SEQ_LENGTH = 256


def _internvit_config(
    hidden_size: int, intermediate_size: int, num_hidden_layers: int, num_attention_heads: int, image_size: int
) -> dict[str, Any]:
    """An InternViT (`intern_vit_6b` family) tower as an `InternVLVisionConfig` dict.

    The fixed fields are those of InternViT-300M-448px-V2.5 (`vision_config` of OpenGVLab/InternVL3-1B/2B/8B):
    14-px patches, biased qkv (`qkv_bias: true`), no QK-norm, LayerNorm with eps 1e-6, GELU, layer scale initialised
    to 0.1 (`initializer_factor`), no final norm (transformers' `use_mean_pooling=True` makes it an identity).
    """
    return {
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "image_size": image_size,
        "patch_size": 14,
        "num_channels": 3,
        "attention_bias": True,
        "use_qk_norm": False,
        "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "layer_scale_init_value": 0.1,
        "use_mean_pooling": True,
    }


def _qwen2_config(
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    max_position_embeddings: int,
    rope_parameters: dict[str, Any],
) -> dict[str, Any]:
    """A Qwen2 decoder as a `Qwen2Config` dict: SiLU, RMSNorm eps 1e-6, full attention, untied LM head."""
    return {
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "max_position_embeddings": max_position_embeddings,
        "rope_parameters": dict(rope_parameters),
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "use_sliding_window": False,
        "tie_word_embeddings": False,
    }


def _build(defaults: dict[str, Any], overrides: dict[str, Any]) -> Self1EConfig:
    kwargs = dict(defaults)
    for key, value in overrides.items():
        if key in ("vision_config", "text_config") and isinstance(value, dict):
            kwargs[key] = {**kwargs[key], **value}
        else:
            kwargs[key] = value
    return Self1EConfig(**kwargs)


def _internvl3_config(
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    overrides: dict[str, Any],
) -> Self1EConfig:
    """InternViT-300M-448px-V2.5 + pixel-shuffle MLP projector + a Qwen2.5 language model of the given size."""
    defaults = {
        "vision_config": _internvit_config(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=448
        ),
        "text_config": _qwen2_config(
            vocab_size=SELF1E_VOCAB_SIZE,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=_INTERNVL3_MAX_POSITIONS,
            rope_parameters=_INTERNVL3_ROPE,
        ),
        "downsample_ratio": 0.5,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -1,  # `select_layer: -1`
        "image_token_id": INTERNVL3_IMAGE_TOKEN_ID,
        "seg_token_id": INTERNVL3_SEG_TOKEN_ID,
        "image_seq_length": _INTERNVL3_IMAGE_SEQ_LENGTH,
        # InternVL3-1B/2B untie the LM head that Qwen2.5-0.5B/1.5B tie; Qwen2.5-7B never ties it.
        "tie_word_embeddings": False,
    }
    return _build(defaults, overrides)


def internvl3_1b_config(**overrides: Any) -> Self1EConfig:
    """SELF1E on InternVL3-1B: InternViT-300M-448px-V2.5 + Qwen2.5-0.5B.

    Language model from `llm_config` of OpenGVLab/InternVL3-1B (`text_config` of InternVL3-1B-hf): hidden 896,
    intermediate 4864, 24 layers, 14 heads, 2 KV heads, vocab 151674 (+1 for `[SEG]`), `tie_word_embeddings: false`.
    """
    return _internvl3_config(896, 4864, 24, 14, 2, overrides)


def internvl3_2b_config(**overrides: Any) -> Self1EConfig:
    """SELF1E on InternVL3-2B (SELF1E-2B): InternViT-300M-448px-V2.5 + Qwen2.5-1.5B.

    Language model from `llm_config` of OpenGVLab/InternVL3-2B (`text_config` of InternVL3-2B-hf): hidden 1536,
    intermediate 8960, 28 layers, 12 heads, 2 KV heads, vocab 151674 (+1 for `[SEG]`), untied LM head.
    """
    return _internvl3_config(1536, 8960, 28, 12, 2, overrides)


def internvl3_8b_config(**overrides: Any) -> Self1EConfig:
    """SELF1E on InternVL3-8B (SELF1E-8B): InternViT-300M-448px-V2.5 + Qwen2.5-7B.

    Language model from `llm_config` of OpenGVLab/InternVL3-8B (`text_config` of InternVL3-8B-hf): hidden 3584,
    intermediate 18944, 28 layers, 28 heads, 4 KV heads, vocab 151674 (+1 for `[SEG]`), untied LM head.
    """
    return _internvl3_config(3584, 18944, 28, 28, 4, overrides)


def tiny_config(**overrides: Any) -> Self1EConfig:
    """A tiny random SELF1E with the sizes of the `tiny-112` reference record (`../shared/reference/records/`).

    112-px tiles (8x8 ViT patches, 16 LLM tokens per tile); InternViT hidden 32, intermediate 64, 2 layers, 4 heads;
    Qwen2 vocab 100, hidden 64, intermediate 128, 2 layers, 4 heads, 2 KV heads, `rope_theta` 1e6, 512 positions;
    the record's token ids (`<IMG_CONTEXT>` 90, `[SEG]` 93). Builds and runs in milliseconds on CPU.
    """
    defaults = {
        "vision_config": _internvit_config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=112
        ),
        "text_config": _qwen2_config(
            vocab_size=100,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        ),
        "downsample_ratio": 0.5,
        "image_token_id": 90,
        "seg_token_id": 93,
        "image_seq_length": 16,
        "tie_word_embeddings": False,
    }
    return _build(defaults, overrides)


PRESETS: dict[str, Callable[[], Self1EConfig]] = {
    "internvl3-1b": internvl3_1b_config,
    "internvl3-2b": internvl3_2b_config,
    "internvl3-8b": internvl3_8b_config,
    "tiny": tiny_config,
}


def get_preset_config(name: str, **overrides: Any) -> Self1EConfig:
    """The `Self1EConfig` of preset `name` (a key of `PRESETS`), with keyword overrides as described above."""
    if name not in PRESETS:
        raise ValueError(f"unknown SELF1E preset {name!r}; valid presets are: {', '.join(sorted(PRESETS))}")
    return PRESETS[name](**overrides)


__all__ = [
    "INTERNVL3_IMAGE_TOKEN_ID",
    "INTERNVL3_SEG_TOKEN_ID",
    "INTERNVL3_VOCAB_SIZE",
    "PRESETS",
    "SELF1E_VOCAB_SIZE",
    "get_preset_config",
    "internvl3_1b_config",
    "internvl3_2b_config",
    "internvl3_8b_config",
    "tiny_config",
]
