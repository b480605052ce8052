"""LoRA on SELF1E through PEFT, with the paper's settings (Sec. 4.1), and saving the result as a plain checkpoint."""

from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model

from ..modeling import Self1EForSegmentation

LANGUAGE_MODEL_LINEARS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
VISION_TOWER_LINEARS = (
    r"model\.vision_tower\.encoder\.layer\.\d+\.(attention\.(q_proj|k_proj|v_proj|projection_layer)|mlp\.(fc1|fc2))"
)
# Trained in full next to the adapters: the segmentation head is new, the projector adapts to the head's second use.
FULLY_TRAINED_MODULES = ["seg_head", "multi_modal_projector"]


@dataclass(frozen=True)
class PaperRecipe:
    """Fine-tuning hyper-parameters of the paper (Sec. 4.1): AdamW, cosine schedule, effective batch 160."""

    lora_rank: int
    lora_alpha: int
    learning_rate: float
    effective_batch_size: int = 160


PAPER_RECIPES = {
    "2b": PaperRecipe(lora_rank=128, lora_alpha=256, learning_rate=1e-4),
    "8b": PaperRecipe(lora_rank=64, lora_alpha=128, learning_rate=6e-5),
}


def self1e_lora_config(
    rank: int = 128,
    alpha: int = 256,
    dropout: float = 0.05,
    train_vision_tower: bool = False,
    new_token_ids: list[int] | None = None,
) -> LoraConfig:
    """A `LoraConfig` for the language model's linear layers (and optionally the vision tower's).

    The segmentation head and projector train fully; `new_token_ids` (e.g. `[SEG]` and the image tokens added to a
    base tokenizer) get trainable rows in the input embeddings and the LM head, without unfreezing the whole vocabulary.
    """
    pattern = (
        LANGUAGE_MODEL_LINEARS if not train_vision_tower else f"({LANGUAGE_MODEL_LINEARS}|{VISION_TOWER_LINEARS})"
    )
    token_rows = None
    if new_token_ids:
        token_rows = {"embed_tokens": list(new_token_ids), "lm_head": list(new_token_ids)}
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=pattern,
        modules_to_save=list(FULLY_TRAINED_MODULES),
        trainable_token_indices=token_rows,
        bias="none",
    )


def apply_lora(model: Self1EForSegmentation, lora_config: LoraConfig) -> PeftModel:
    """Wraps `model` with adapters; activation checkpointing, if on, keeps working through the frozen embeddings."""
    if model.is_activation_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, lora_config)


def save_self1e(model: PeftModel | Self1EForSegmentation, out_dir: str | Path, merge: bool = True) -> Path:
    """Saves a fine-tuned model. With `merge`, LoRA is folded into the weights and the folder is a plain Self1E
    checkpoint (`AutoModel.from_pretrained(out_dir)`); without, only the adapter and fully trained modules are saved
    (`PeftModel.from_pretrained(base_model, out_dir)`)."""
    out_dir = Path(out_dir)
    if isinstance(model, PeftModel) and merge:
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    return out_dir


__all__ = ["PAPER_RECIPES", "PaperRecipe", "apply_lora", "save_self1e", "self1e_lora_config"]
