"""Conversion of checkpoints in the SELF1E authors' layout (InternVL-chat keys) to `Self1EForSegmentation`.

Reference layout: `vision_model.*` (InternViT with fused `qkv`), `mlp1.{0,1,3}` (projector),
`language_model.model.*` / `language_model.lm_head.*` (Qwen decoder) and the head MLPs `combine_decode_proj_ori`
(f_PUS), `combine_decode_proj_all` (f'_PUS) and `combine_decode_proj` (output MLP).
"""

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import CONFIG_MAPPING

from ..modeling import Self1EConfig
from ..modeling.prompts_self1e import IMAGE_CONTEXT_TOKEN, SEG_TOKEN
from .checkpoint_files import checkpoint_shards, read_header
from .folder_writer import write_converted_folder
from .lora import LoraMerger, load_lora_adapter

_LLM_TYPES = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3_moe"}

# Reference name -> our name, for every key that is renamed one to one (regex, replacement).
_RENAMES: list[tuple[str, str]] = [
    (r"^vision_model\.embeddings\.class_embedding$", "model.vision_tower.embeddings.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "model.vision_tower.embeddings.position_embeddings"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "model.vision_tower.embeddings.patch_embeddings.projection."),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.attn\.proj\.",
        r"model.vision_tower.encoder.layer.\1.attention.projection_layer.",
    ),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.attn\.q_norm\.",
        r"model.vision_tower.encoder.layer.\1.attention.q_norm.",
    ),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.attn\.k_norm\.",
        r"model.vision_tower.encoder.layer.\1.attention.k_norm.",
    ),
    (r"^vision_model\.encoder\.layers\.(\d+)\.ls1$", r"model.vision_tower.encoder.layer.\1.lambda_1"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.ls2$", r"model.vision_tower.encoder.layer.\1.lambda_2"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.norm1\.", r"model.vision_tower.encoder.layer.\1.layernorm_before."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.norm2\.", r"model.vision_tower.encoder.layer.\1.layernorm_after."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"model.vision_tower.encoder.layer.\1.mlp."),
    (r"^mlp1\.0\.", "model.multi_modal_projector.layer_norm."),
    (r"^mlp1\.1\.", "model.multi_modal_projector.linear_1."),
    (r"^mlp1\.3\.", "model.multi_modal_projector.linear_2."),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^combine_decode_proj_ori\.0\.", "seg_head.vision_unshuffle_mlp.fc1."),
    (r"^combine_decode_proj_ori\.2\.", "seg_head.vision_unshuffle_mlp.fc2."),
    (r"^combine_decode_proj_all\.0\.", "seg_head.llm_unshuffle_mlp.fc1."),
    (r"^combine_decode_proj_all\.2\.", "seg_head.llm_unshuffle_mlp.fc2."),
    (r"^combine_decode_proj\.0\.", "seg_head.output_mlp.fc1."),
    (r"^combine_decode_proj\.2\.", "seg_head.output_mlp.fc2."),
]
_FUSED_QKV = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")


def convert_reference_tensor(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Our name(s) and tensor(s) for one reference tensor; the fused vision `qkv` splits into three.

    Raises:
        KeyError: the name belongs to no known part of the reference layout.
    """
    fused = _FUSED_QKV.match(name)
    if fused:
        layer, kind = fused.groups()
        prefix = f"model.vision_tower.encoder.layer.{layer}.attention"
        query, key, value = tensor.chunk(3, dim=0)
        return [
            (f"{prefix}.q_proj.{kind}", query),
            (f"{prefix}.k_proj.{kind}", key),
            (f"{prefix}.v_proj.{kind}", value),
        ]
    for pattern, replacement in _RENAMES:
        new_name, found = re.subn(pattern, replacement, name)
        if found:
            return [(new_name, tensor)]
    raise KeyError(name)


def self1e_config_from_reference(
    reference_config: Mapping,
    image_token_id: int,
    seg_token_id: int,
    loss_weights: Mapping[str, float] | None = None,
) -> Self1EConfig:
    """A `Self1EConfig` equivalent to a reference (`internvl_chat`) config dictionary.

    Args:
        reference_config: the reference `config.json` content (with `vision_config` and `llm_config`).
        image_token_id: id of `<IMG_CONTEXT>`; the reference config does not store it (its tokenizer does).
        seg_token_id: id of `[SEG]`.
        loss_weights: optional `{"ce", "bce", "dice"}` weights used by the reference training.
    """
    for key in ("vision_config", "llm_config"):
        if key not in reference_config:
            raise ValueError(f"the reference config has no {key!r}; is it an InternVL-chat/SELF1E config.json?")
    if reference_config.get("ps_version", "v2") != "v2":
        raise ValueError(f"only pixel shuffle ps_version='v2' is supported, got {reference_config['ps_version']!r}")
    vision = reference_config["vision_config"]
    image_size = reference_config.get("force_image_size") or vision["image_size"]
    vision_config = {
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "num_hidden_layers": vision["num_hidden_layers"],
        "num_attention_heads": vision["num_attention_heads"],
        "image_size": image_size,
        "patch_size": vision["patch_size"],
        "layer_norm_eps": vision.get("layer_norm_eps", 1e-6),
        "hidden_act": vision.get("hidden_act", "gelu"),
        "norm_type": vision.get("norm_type", "layer_norm"),
        "attention_bias": vision.get("qkv_bias", True),
        "use_qk_norm": vision.get("qk_normalization", False),
        "initializer_range": vision.get("initializer_range", 0.02),
    }
    text_config = _text_config_from_reference(reference_config["llm_config"])
    weights = loss_weights or {}
    return Self1EConfig(
        vision_config=vision_config,
        text_config=text_config,
        downsample_ratio=reference_config.get("downsample_ratio", 0.5),
        vision_feature_layer=reference_config.get("select_layer", -1),
        image_token_id=image_token_id,
        seg_token_id=seg_token_id,
        image_seq_length=int(
            (image_size // vision["patch_size"]) ** 2 * reference_config.get("downsample_ratio", 0.5) ** 2
        ),
        text_loss_weight=weights.get("ce", 1.0),
        bce_loss_weight=weights.get("bce", 2.0),
        dice_loss_weight=weights.get("dice", 0.5),
        tie_word_embeddings=text_config.tie_word_embeddings,
    )


def _text_config_from_reference(llm_config: Mapping):
    architectures = llm_config.get("architectures") or ["Qwen2ForCausalLM"]
    model_type = llm_config.get("model_type") or _LLM_TYPES.get(architectures[0])
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"unsupported language model {architectures[0]!r}")
    config_class = CONFIG_MAPPING[model_type]
    # Fields of the transformers config, plus the pre-v5 RoPE keys that it still converts to `rope_parameters`.
    known = {field.name for field in dataclasses.fields(config_class)} | {"rope_theta", "rope_scaling"}
    kwargs = {key: value for key, value in llm_config.items() if key in known and value is not None}
    return config_class(**kwargs)


def load_reference_settings(
    config_path: str | Path, image_token_id: int | None = None, seg_token_id: int | None = None
) -> tuple[dict, int, int, dict | None]:
    """Reads a reference `config.json`, or a record's `meta.json` (its `official_config`, `token_ids` and
    `loss_weights`). Returns the reference config, the `<IMG_CONTEXT>` and `[SEG]` ids, and the loss weights.

    A plain `config.json` does not know the token ids: they come from the arguments, or from the tokenizer files
    (`added_tokens.json` / `tokenizer.json`) beside it.
    """
    config_path = Path(config_path)
    content = json.loads(config_path.read_text())
    loss_weights = None
    if "official_config" in content:
        token_ids = content.get("token_ids", {})
        image_token_id = image_token_id if image_token_id is not None else token_ids.get("img_context")
        seg_token_id = seg_token_id if seg_token_id is not None else token_ids.get("seg")
        loss_weights = content.get("loss_weights")
        content = content["official_config"]
    if image_token_id is None or seg_token_id is None:
        added = added_token_ids(config_path.parent)
        image_token_id = image_token_id if image_token_id is not None else added.get(IMAGE_CONTEXT_TOKEN)
        seg_token_id = seg_token_id if seg_token_id is not None else added.get(SEG_TOKEN)
    if image_token_id is None or seg_token_id is None:
        raise ValueError(
            f"the ids of {IMAGE_CONTEXT_TOKEN} and {SEG_TOKEN} are unknown: pass them, or keep the tokenizer files "
            f"beside {config_path}"
        )
    return content, int(image_token_id), int(seg_token_id), loss_weights


def added_token_ids(folder: Path) -> dict[str, int]:
    """Ids of the tokens added to a tokenizer saved in `folder` (`added_tokens.json` or `tokenizer.json`)."""
    added_tokens = folder / "added_tokens.json"
    if added_tokens.is_file():
        return json.loads(added_tokens.read_text())
    tokenizer = folder / "tokenizer.json"
    if tokenizer.is_file():
        return {token["content"]: token["id"] for token in json.loads(tokenizer.read_text()).get("added_tokens", [])}
    return {}


def convert_reference_checkpoint(
    checkpoint: str | Path,
    reference_config: str | Path,
    out_dir: str | Path,
    image_token_id: int | None = None,
    seg_token_id: int | None = None,
    dtype: torch.dtype | None = None,
    lora_alpha: float | None = None,
    lora_adapter: str | Path | None = None,
    lora_adapter_prefix: str = "language_model.",
    check_only: bool = False,
    overwrite: bool = False,
) -> Path:
    """Converts a reference SELF1E checkpoint (file, index or folder; single or sharded) into a Self1E folder that
    `Self1EForSegmentation.from_pretrained` (or `AutoModel` with `trust_remote_code=True`) loads.

    LoRA factors left unmerged in the checkpoint (a training checkpoint of the reference code), or given as a PEFT
    adapter folder `lora_adapter`, are merged into their weights on the way. `lora_alpha` applies to factors stored in
    the checkpoint (default: twice the rank, as the reference training); an adapter folder gives its own. The
    adapter's module names are prefixed with `lora_adapter_prefix`: the reference wraps its language model alone.
    With `check_only`, names, shapes and dtypes are checked and nothing is written. `out_dir` must be missing or
    empty unless `overwrite`, which replaces the converted model's files in it and keeps the others.
    """
    settings, image_token_id, seg_token_id, loss_weights = load_reference_settings(
        reference_config, image_token_id, seg_token_id
    )
    config = self1e_config_from_reference(settings, image_token_id, seg_token_id, loss_weights)
    shards = checkpoint_shards(checkpoint)
    adapter_header, use_rslora = None, False
    if lora_adapter is not None:
        adapter_header, lora_alpha, use_rslora = load_lora_adapter(lora_adapter)
    merger = LoraMerger.from_header(read_header(shards), adapter_header, lora_adapter_prefix, lora_alpha, use_rslora)
    convert = convert_reference_tensor if merger is None else merger.wrap(convert_reference_tensor)
    inputs = [checkpoint, reference_config] + ([lora_adapter] if lora_adapter is not None else [])
    return write_converted_folder(
        shards, convert, config, out_dir, dtype, check_only=check_only, overwrite=overwrite, inputs=inputs
    )


__all__ = [
    "added_token_ids",
    "convert_reference_checkpoint",
    "convert_reference_tensor",
    "load_reference_settings",
    "self1e_config_from_reference",
]
