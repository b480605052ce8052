"""TRL's `SFTTrainer` for SELF1E (needs `trl`, imported only from here)."""

from trl import SFTTrainer

from .trainer import Self1ETrainerMixin


class Self1ESFTTrainer(Self1ETrainerMixin, SFTTrainer):
    """
    `trl.SFTTrainer` training on SELF1E's own loss (text + mask BCE + Dice), with the components logged like
    [`Self1ETrainer`]. TRL's loss (a fused LM head scoring the tokens only) would drop the mask losses, so
    `compute_loss` is `transformers.Trainer`'s; TRL's token metrics (`entropy`, `mean_token_accuracy`, `num_tokens`)
    are therefore not logged.

    The samples are prepared by [`Self1EDataCollator`], not by TRL, so the `SFTConfig` needs:

    - `dataset_kwargs={"skip_prepare_dataset": True}`: no tokenisation, truncation or packing by TRL (a dataset with
      an `image` column is never prepared anyway);
    - `remove_unused_columns=False`: the collator reads the dataset's columns (`image`, `expression`, `conversation`,
      `masks`, ...);
    - the collator given as `data_collator`, and the [`Self1EProcessor`] as `processing_class`.

    `max_length`, `packing`, `padding_free`, `assistant_only_loss` and `completion_only_loss` of the config do not
    apply: labels cover the assistant turns and truncation is `Self1EDataCollator(max_length=...)`.

    Example:

    ```python
    from trl import SFTConfig

    config = SFTConfig(
        output_dir="out",
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )
    trainer = Self1ESFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        data_collator=Self1EDataCollator.from_model_config(processor, model.config),
        processing_class=processor,
    )
    ```
    """


__all__ = ["Self1ESFTTrainer"]
