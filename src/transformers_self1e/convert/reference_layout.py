"""Names and shapes of a checkpoint in the SELF1E reference layout, written out from the reference modules.

Written from the modules of `ANDYZAQ/SELF1E` (`InternVL3SELF1E` over InternVL's `InternVLChatModel`:
`InternVisionModel`, the `mlp1` projector, a Qwen2 `ForCausalLM`, the three `combine_decode_proj*` MLPs), not from the
conversion's rename table, so that a conversion can be checked against it at any size without real weights
(`benchmarks/convert_memory.py`, and the InternVL3-8B-sized checks in the tests).
"""

from ..modeling import Self1EConfig


def reference_checkpoint_shapes(config: Self1EConfig, segmentation_head: bool = True) -> dict[str, tuple[int, ...]]:
    """Every tensor of a reference checkpoint of a model with `config`; without `segmentation_head`, the layout of an
    original InternVL checkpoint (`OpenGVLab/InternVL3-*`)."""
    vision, text = config.vision_config, config.text_config
    width, mlp_width = vision.hidden_size, vision.intermediate_size
    patch = vision.patch_size[0]
    patches = (vision.image_size[0] // patch) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (1, 1, width),
        "vision_model.embeddings.position_embedding": (1, patches + 1, width),
        "vision_model.embeddings.patch_embedding.weight": (width, vision.num_channels, patch, patch),
        "vision_model.embeddings.patch_embedding.bias": (width,),
    }
    for layer in range(vision.num_hidden_layers):
        prefix = f"vision_model.encoder.layers.{layer}"
        shapes[f"{prefix}.attn.qkv.weight"] = (3 * width, width)
        if vision.attention_bias:
            shapes[f"{prefix}.attn.qkv.bias"] = (3 * width,)
        if vision.use_qk_norm:
            shapes[f"{prefix}.attn.q_norm.weight"] = shapes[f"{prefix}.attn.k_norm.weight"] = (width,)
        shapes.update(
            {
                f"{prefix}.attn.proj.weight": (width, width),
                f"{prefix}.attn.proj.bias": (width,),
                f"{prefix}.ls1": (width,),
                f"{prefix}.ls2": (width,),
                f"{prefix}.mlp.fc1.weight": (mlp_width, width),
                f"{prefix}.mlp.fc1.bias": (mlp_width,),
                f"{prefix}.mlp.fc2.weight": (width, mlp_width),
                f"{prefix}.mlp.fc2.bias": (width,),
            }
        )
        for norm in ("norm1", "norm2"):
            shapes[f"{prefix}.{norm}.weight"] = (width,)
            if vision.norm_type == "layer_norm":
                shapes[f"{prefix}.{norm}.bias"] = (width,)

    hidden, factor = text.hidden_size, config.shuffle_factor
    shuffled = width * factor * factor
    shapes.update(
        {
            "mlp1.0.weight": (shuffled,),
            "mlp1.0.bias": (shuffled,),
            "mlp1.1.weight": (hidden, shuffled),
            "mlp1.1.bias": (hidden,),
            "mlp1.3.weight": (hidden, hidden),
            "mlp1.3.bias": (hidden,),
        }
    )

    head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
    kv_width = text.num_key_value_heads * head_dim
    shapes["language_model.model.embed_tokens.weight"] = (text.vocab_size, hidden)
    for layer in range(text.num_hidden_layers):
        prefix = f"language_model.model.layers.{layer}"
        shapes.update(
            {
                f"{prefix}.self_attn.q_proj.weight": (text.num_attention_heads * head_dim, hidden),
                f"{prefix}.self_attn.q_proj.bias": (text.num_attention_heads * head_dim,),
                f"{prefix}.self_attn.k_proj.weight": (kv_width, hidden),
                f"{prefix}.self_attn.k_proj.bias": (kv_width,),
                f"{prefix}.self_attn.v_proj.weight": (kv_width, hidden),
                f"{prefix}.self_attn.v_proj.bias": (kv_width,),
                f"{prefix}.self_attn.o_proj.weight": (hidden, text.num_attention_heads * head_dim),
                f"{prefix}.mlp.gate_proj.weight": (text.intermediate_size, hidden),
                f"{prefix}.mlp.up_proj.weight": (text.intermediate_size, hidden),
                f"{prefix}.mlp.down_proj.weight": (hidden, text.intermediate_size),
                f"{prefix}.input_layernorm.weight": (hidden,),
                f"{prefix}.post_attention_layernorm.weight": (hidden,),
            }
        )
    shapes["language_model.model.norm.weight"] = (hidden,)
    if not text.tie_word_embeddings:
        shapes["language_model.lm_head.weight"] = (text.vocab_size, hidden)

    if segmentation_head:
        for name, out_features in (
            ("combine_decode_proj", hidden),
            ("combine_decode_proj_all", hidden * factor * factor),
            ("combine_decode_proj_ori", hidden * factor * factor),
        ):
            shapes.update(
                {
                    f"{name}.0.weight": (hidden, hidden),
                    f"{name}.0.bias": (hidden,),
                    f"{name}.2.weight": (out_features, hidden),
                    f"{name}.2.bias": (out_features,),
                }
            )
    return shapes


__all__ = ["reference_checkpoint_shapes"]
