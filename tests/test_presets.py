"""Presets: real InternVL3 sizes (checked against published parameter counts on the meta device) and the tiny one."""

import pytest
import torch

from transformers_self1e import Self1EConfig, Self1EForSegmentation
from transformers_self1e.presets import (
    INTERNVL3_IMAGE_TOKEN_ID,
    INTERNVL3_SEG_TOKEN_ID,
    INTERNVL3_VOCAB_SIZE,
    PRESETS,
    SELF1E_VOCAB_SIZE,
    get_preset_config,
    tiny_config,
)

# Published parameter counts (Hugging Face safetensors metadata, BF16 `parameter_count`) of released checkpoints.
# InternVL2.5-1B is InternViT-300M-448px-V2.5 + MLP + Qwen2.5-0.5B with InternVL3's tokenizer (vocab 151674) and an
# untied LM head: the very architecture of InternVL3-1B. InternVL2.5-4B is the same ViT + MLP + Qwen2.5-3B.
INTERNVL2_5_1B_PARAMS = 938_193_024
INTERNVL2_5_4B_PARAMS = 3_712_637_952
# Qwen2.5-*-Instruct (model cards): (parameters, vocab size, hidden size, LM head tied).
QWEN2_5 = {
    "0.5B": (494_032_768, 151_936, 896, True),
    "1.5B": (1_543_714_304, 151_936, 1536, True),
    "3B": (3_085_938_688, 151_936, 2048, True),
    "7B": (7_615_616_512, 152_064, 3584, False),
}
# Rounded bf16 weight sizes shown on the Hub for OpenGVLab/InternVL3-{1B,2B,8B}(-hf), in GB (1e9 bytes), with the
# rounding unit: model.safetensors 1.88 GB / 4.18 GB; 8B: shards 4.88 + 4.99 + 4.93 + 1.09 GB (each +-0.005).
INTERNVL3_CHECKPOINT_GB = {"internvl3-1b": (1.88, 0.005), "internvl3-2b": (4.18, 0.005), "internvl3-8b": (15.89, 0.02)}
LLM_OF_PRESET = {"internvl3-1b": "0.5B", "internvl3-2b": "1.5B", "internvl3-8b": "7B"}


def projector_params(llm_hidden: int, vit_hidden: int = 1024, shuffle: int = 2) -> int:
    """`mlp1`: LayerNorm(c) -> Linear(c, d) -> GELU -> Linear(d, d), with c = vit_hidden * shuffle**2."""
    channels = vit_hidden * shuffle**2
    return 2 * channels + (channels * llm_hidden + llm_hidden) + (llm_hidden * llm_hidden + llm_hidden)


def qwen_with_internvl3_vocab(size: str) -> int:
    """Published Qwen2.5 count, re-sized to InternVL3's vocabulary with an untied LM head (as InternVL3 ships it)."""
    params, vocab, hidden, tied = QWEN2_5[size]
    params -= (vocab - INTERNVL3_VOCAB_SIZE) * hidden * (1 if tied else 2)
    return params + (INTERNVL3_VOCAB_SIZE * hidden if tied else 0)


def internvit_300m_params() -> int:
    """InternViT-300M-448px-V2.5, backed out of the published InternVL2.5-1B count (and checked on InternVL2.5-4B)."""
    vit = INTERNVL2_5_1B_PARAMS - projector_params(896) - qwen_with_internvl3_vocab("0.5B")
    assert INTERNVL2_5_4B_PARAMS - projector_params(2048) - qwen_with_internvl3_vocab("3B") == vit
    return vit


def expected_internvl3_params(name: str) -> int:
    size = LLM_OF_PRESET[name]
    return internvit_300m_params() + projector_params(QWEN2_5[size][2]) + qwen_with_internvl3_vocab(size)


def seg_head_params(d: int) -> int:
    """Two pixel-unshuffle MLPs Linear(d, d) + GELU + Linear(d, 4d), and the output MLP Linear(d, d) x 2."""
    unshuffle_mlp = (d * d + d) + (d * 4 * d + 4 * d)
    output_mlp = 2 * (d * d + d)
    return 2 * unshuffle_mlp + output_mlp


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared (tied) parameters are counted once


@pytest.mark.parametrize("name", ["internvl3-1b", "internvl3-2b", "internvl3-8b"])
def test_real_preset_matches_published_internvl3(name):
    config = get_preset_config(name)
    with torch.device("meta"):
        model = Self1EForSegmentation(config)

    assert model.lm_head.weight is not model.get_input_embeddings().weight  # InternVL3 ships an untied LM head
    d = config.text_config.hidden_size
    # Everything but the seg head and the `[SEG]` rows of the embedding and the (separate) LM head.
    internvl = count(model) - count(model.seg_head) - 2 * d
    assert count(model.model.vision_tower) == internvit_300m_params() == 304_012_288
    assert internvl == expected_internvl3_params(name)
    if name == "internvl3-1b":
        assert internvl == INTERNVL2_5_1B_PARAMS
    # Only rounded figures exist for the InternVL3 checkpoints themselves: 2 bytes per parameter within the rounding.
    gigabytes, rounding = INTERNVL3_CHECKPOINT_GB[name]
    assert abs(2 * internvl / 1e9 - gigabytes) <= rounding
    assert count(model.seg_head) == seg_head_params(d)


@pytest.mark.parametrize("name", ["internvl3-1b", "internvl3-2b", "internvl3-8b"])
def test_real_preset_settings(name):
    config = get_preset_config(name)
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers, vision.num_attention_heads) == (
        1024,
        4096,
        24,
        16,
    )
    assert tuple(vision.image_size) == (448, 448) and tuple(vision.patch_size) == (14, 14)
    assert vision.attention_bias and not vision.use_qk_norm and vision.layer_norm_eps == 1e-6
    assert text.vocab_size == SELF1E_VOCAB_SIZE == INTERNVL3_VOCAB_SIZE + 1 and text.rms_norm_eps == 1e-6
    assert text.max_position_embeddings == 32768 and text.rope_parameters["rope_theta"] == 1e6
    assert not config.tie_word_embeddings and not text.tie_word_embeddings
    assert config.image_token_id == INTERNVL3_IMAGE_TOKEN_ID == 151667
    assert config.seg_token_id == INTERNVL3_SEG_TOKEN_ID == 151674
    assert config.image_tokens_per_tile == config.image_seq_length == 256


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError) as error:
        get_preset_config("nope")
    for name in PRESETS:
        assert name in str(error.value)


def test_overrides():
    config = get_preset_config("tiny", text_config={"vocab_size": 120}, segmentation_attention="causal")
    assert isinstance(config, Self1EConfig)
    assert config.text_config.vocab_size == 120 and config.text_config.hidden_size == 64  # merged, not replaced
    assert config.segmentation_attention == "causal"
    assert all(isinstance(PRESETS[name](), Self1EConfig) for name in PRESETS)  # zero-argument callables


def test_tiny_preset_matches_reference_record_sizes():
    config = tiny_config()
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers, vision.num_attention_heads) == (
        32,
        64,
        2,
        4,
    )
    assert tuple(vision.image_size) == (112, 112) and tuple(vision.patch_size) == (14, 14) and vision.attention_bias
    assert (text.vocab_size, text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (100, 64, 128, 2)
    assert (text.num_attention_heads, text.num_key_value_heads, text.rope_parameters["rope_theta"]) == (4, 2, 1e6)
    assert (config.image_token_id, config.seg_token_id, config.image_tokens_per_tile) == (90, 93, 16)


def test_tiny_preset_builds_and_runs():
    torch.manual_seed(0)
    config = tiny_config()
    model = Self1EForSegmentation(config).eval()
    tokens = config.image_tokens_per_tile
    input_ids = torch.tensor([[94, 91] + [config.image_token_id] * tokens + [92, 10, 11, config.seg_token_id, 95]])
    with torch.no_grad():
        output = model(input_ids=input_ids, pixel_values=torch.randn(1, 3, 112, 112))

    assert output.logits.shape == (1, input_ids.shape[1], config.text_config.vocab_size)
    grid = 2 * config.vit_grid_size  # the residual-amplifier head predicts at twice the ViT grid
    assert output.pred_masks[0].shape == (1, grid, grid)
    assert torch.isfinite(output.pred_masks[0]).all()
