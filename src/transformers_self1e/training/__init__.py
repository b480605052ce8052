"""Fine-tuning SELF1E with transformers' Trainer or TRL, LoRA through PEFT, and growing a model between stages.

`Self1ESFTTrainer` needs `trl`, which is imported on first use of the name.
"""

from .collator import IGNORE_INDEX, Self1EDataCollator, collate_token_layout
from .lora import PAPER_RECIPES, apply_lora, save_self1e, self1e_lora_config
from .model_growth import add_grid_position_code, deepen_language_model, grid_position_code
from .trainer import Self1ETrainer, Self1ETrainerMixin


def __getattr__(name: str):
    if name == "Self1ESFTTrainer":
        from .sft_trainer import Self1ESFTTrainer

        return Self1ESFTTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IGNORE_INDEX",
    "PAPER_RECIPES",
    "Self1EDataCollator",
    "Self1ESFTTrainer",
    "Self1ETrainer",
    "Self1ETrainerMixin",
    "add_grid_position_code",
    "apply_lora",
    "collate_token_layout",
    "deepen_language_model",
    "grid_position_code",
    "save_self1e",
    "self1e_lora_config",
]
