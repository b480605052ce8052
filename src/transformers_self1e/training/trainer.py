"""`Trainer` for SELF1E: the model's own loss, with the text, BCE and Dice losses logged next to the total."""

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.utils import logging

logger = logging.get_logger(__name__)

LOSS_COMPONENTS = ("text_loss", "mask_bce_loss", "mask_dice_loss")


def default_find_unused_parameters(args: TrainingArguments | None) -> None:
    """Sets `args.ddp_find_unused_parameters=True` when the user left it `None` (as TRL's `SFTTrainer` does for
    vision-language models).

    A SELF1E batch need not use every parameter: the segmentation head gets no gradient from a batch without `[SEG]`
    (VQA, text-only), the projector none from a text-only batch, and DDP then fails unless it looks for unused
    parameters. transformers' default turns that search off with activation checkpointing; it works with the
    non-reentrant checkpointing transformers uses by default, so it stays off only for reentrant checkpointing.
    """
    if args is None or args.ddp_find_unused_parameters is not None:
        return
    if (args.activation_checkpointing_kwargs or {}).get("use_reentrant"):
        return
    logger.info("ddp_find_unused_parameters=None: using True, since batches without [SEG] leave the seg head unused")
    args.ddp_find_unused_parameters = True


class Self1ETrainerMixin:
    """Shared by [`Self1ETrainer`] and [`Self1ESFTTrainer`]: the loss is the model's own (`Trainer.compute_loss`),
    and every training log also carries `text_loss`, `mask_bce_loss` and `mask_dice_loss`, averaged over the
    micro-batches since the last log and over processes."""

    def __init__(self, model: nn.Module | None = None, args: TrainingArguments | None = None, *more_args, **kwargs):
        default_find_unused_parameters(args)
        super().__init__(model, args, *more_args, **kwargs)
        self._component_sums = torch.zeros(len(LOSS_COMPONENTS), device=self.args.device)
        self._component_counts = torch.zeros(len(LOSS_COMPONENTS), device=self.args.device)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict,
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        # `Trainer.compute_loss` by name: a subclass's own loss (TRL's fused LM head) would drop the mask losses.
        loss, outputs = Trainer.compute_loss(
            self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            for index, name in enumerate(LOSS_COMPONENTS):
                value = outputs.get(name)
                if value is not None:
                    self._component_sums[index] += value.detach().float()
                    self._component_counts[index] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            # One collective on every process, whichever components it saw.
            totals = self.accelerator.reduce(torch.stack([self._component_sums, self._component_counts]), "sum")
            for name, total, count in zip(LOSS_COMPONENTS, *totals.tolist()):
                if count:
                    logs[name] = round(total / count, 4)
            self._component_sums.zero_()
            self._component_counts.zero_()
        super().log(logs, start_time)


class Self1ETrainer(Self1ETrainerMixin, Trainer):
    """A `transformers.Trainer` whose training logs also carry `text_loss`, `mask_bce_loss` and `mask_dice_loss`.

    Everything else is the stock Trainer: pass a [`Self1EDataCollator`] as `data_collator` and
    `TrainingArguments(remove_unused_columns=False)`. The loss is the model's (`text_loss_weight`, `bce_loss_weight`,
    `dice_loss_weight` of its config): a mean over each micro-batch (labelled tokens for the text loss, samples for the
    mask losses), which the Trainer divides by the gradient accumulation steps. An accumulated step thus follows the
    mean of the micro-batch losses, which is the loss of the whole batch when every micro-batch labels as many tokens
    and holds as many samples. Under DDP, `ddp_find_unused_parameters` defaults to `True` (see
    [`default_find_unused_parameters`]).
    """


__all__ = ["LOSS_COMPONENTS", "Self1ETrainer", "Self1ETrainerMixin", "default_find_unused_parameters"]
