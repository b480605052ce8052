"""Fine-tuning SELF1E with transformers' Trainer or TRL, LoRA through PEFT."""

from .lora import PAPER_RECIPES, apply_lora, save_self1e, self1e_lora_config
from .trainer import Self1ETrainer

__all__ = ["PAPER_RECIPES", "Self1ETrainer", "apply_lora", "save_self1e", "self1e_lora_config"]
