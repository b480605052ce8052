"""Fine-tuning SELF1E with transformers' Trainer or TRL, LoRA through PEFT."""

from .collator import IGNORE_INDEX, Self1EDataCollator, collate_token_layout
from .lora import PAPER_RECIPES, apply_lora, save_self1e, self1e_lora_config
from .trainer import Self1ETrainer

__all__ = [
    "IGNORE_INDEX",
    "PAPER_RECIPES",
    "Self1EDataCollator",
    "Self1ETrainer",
    "apply_lora",
    "collate_token_layout",
    "save_self1e",
    "self1e_lora_config",
]
