"""`Trainer` for SELF1E: logs the text, BCE and Dice losses next to the total."""

from collections import defaultdict

import torch
from transformers import Trainer

LOSS_COMPONENTS = ("text_loss", "mask_bce_loss", "mask_dice_loss")


class Self1ETrainer(Trainer):
    """A `transformers.Trainer` whose training logs also carry `text_loss`, `mask_bce_loss` and `mask_dice_loss`,
    averaged over the steps since the last log (and over processes).

    Everything else is the stock Trainer: pass a [`Self1EDataCollator`] as `data_collator` and the usual
    `TrainingArguments`. The model's own loss is used (`text_loss_weight`, `bce_loss_weight`, `dice_loss_weight` of its
    config).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._component_sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.args.device))
        self._component_counts: dict[str, int] = defaultdict(int)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            for name in LOSS_COMPONENTS:
                value = outputs.get(name) if hasattr(outputs, "get") else None
                if value is not None:
                    self._component_sums[name] = self._component_sums[name] + value.detach().float()
                    self._component_counts[name] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._component_counts:
            for name, total in self._component_sums.items():
                mean = total / self._component_counts[name]
                logs[name] = round(self.accelerator.reduce(mean, reduction="mean").item(), 4)
            self._component_sums.clear()
            self._component_counts.clear()
        super().log(logs, start_time)


__all__ = ["LOSS_COMPONENTS", "Self1ETrainer"]
