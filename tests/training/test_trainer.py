"""Self1ETrainer and Self1ESFTTrainer on the tiny model: LoRA training, logged loss components, saving, resuming,
gradient accumulation, the DDP default."""

import copy
import math

import pytest
import torch
from datasets import concatenate_datasets
from helpers.pairs import random_image, tiny_model_and_processor
from peft import PeftModel
from transformers import TrainingArguments

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.data import SyntheticConfig, make_synthetic_referring_dataset
from transformers_self1e.training import (
    Self1EDataCollator,
    Self1ETrainer,
    apply_lora,
    save_self1e,
    self1e_lora_config,
)
from transformers_self1e.training.trainer import LOSS_COMPONENTS


def training_args(output_dir, **overrides) -> TrainingArguments:
    defaults = {
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "remove_unused_columns": False,
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
    }
    return TrainingArguments(output_dir=str(output_dir), **(defaults | overrides))


def step_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.fixture(scope="module")
def synthetic():
    """Four referring samples: 112-px images (one tile), each with one [SEG] and the same three labelled tokens."""
    return make_synthetic_referring_dataset(4, seed=0, config=SyntheticConfig(image_size=112))


# ----------------------------------------------------------------------------------------------------------
# LoRA + Self1ETrainer
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(synthetic, tmp_path_factory):
    """The tiny model with LoRA (rank 8, [SEG] and image-token rows), trained 12 steps on the 4 samples repeated."""
    model, processor = tiny_model_and_processor()
    lora_config = self1e_lora_config(
        rank=8, alpha=16, dropout=0.0, new_token_ids=[processor.seg_token_id, processor.image_token_id]
    )
    peft_model = apply_lora(model, lora_config)
    args = training_args(
        tmp_path_factory.mktemp("lora"), max_steps=12, learning_rate=5e-3, lr_scheduler_type="constant"
    )
    trainer = Self1ETrainer(
        model=peft_model,
        args=args,
        train_dataset=concatenate_datasets([synthetic] * 6),
        data_collator=Self1EDataCollator(processor),
    )
    trainer.train()
    return trainer, processor


def test_lora_training_reduces_the_loss_and_logs_its_components(lora_run):
    trainer, _ = lora_run
    logs = step_logs(trainer)
    assert len(logs) == 12
    for entry in logs:
        assert set(LOSS_COMPONENTS) <= entry.keys()
        assert all(math.isfinite(entry[name]) for name in ("loss", *LOSS_COMPONENTS))
    losses = [entry["loss"] for entry in logs]
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3
    assert logs[-1]["mask_bce_loss"] < logs[0]["mask_bce_loss"]


def test_lora_trains_head_and_projector_fully_and_freezes_the_base(lora_run):
    trainer, _ = lora_run
    trainable = {name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad}
    for module in (
        trainer.model.base_model.model.seg_head,
        trainer.model.base_model.model.model.multi_modal_projector,
    ):
        trained_copy = module.modules_to_save["default"]
        assert all(parameter.requires_grad for parameter in trained_copy.parameters())
        assert not any(parameter.requires_grad for parameter in module.original_module.parameters())
    assert any("lora_A" in name for name in trainable) and any("trainable_tokens_delta" in name for name in trainable)
    frozen_base = [
        name for name in trainable if "language_model" in name and "lora_" not in name and "delta" not in name
    ]
    assert frozen_base == []
    language_model = trainer.model.base_model.model.model.language_model
    assert not language_model.layers[0].self_attn.q_proj.base_layer.weight.requires_grad
    assert not language_model.embed_tokens.token_adapter.base_layer.weight.requires_grad


def test_saved_adapter_and_merged_model_reproduce_the_peft_model(lora_run, synthetic, tmp_path):
    trainer, processor = lora_run
    peft_model = copy.deepcopy(trainer.model).eval()
    batch = Self1EDataCollator(processor)(list(synthetic))
    with torch.no_grad():
        expected = peft_model(**batch)

    adapter_dir = save_self1e(peft_model, tmp_path / "adapter", merge=False)
    assert (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "config.json").exists()
    base, _ = tiny_model_and_processor()
    restored = PeftModel.from_pretrained(base, adapter_dir).eval()

    merged_dir = save_self1e(peft_model, tmp_path / "merged", merge=True)
    merged = Self1EForSegmentation.from_pretrained(merged_dir).eval()
    assert type(merged) is Self1EForSegmentation
    assert not any("lora" in name or "base_layer" in name for name in merged.state_dict())

    for model in (restored, merged):
        with torch.no_grad():
            outputs = model(**batch)
        torch.testing.assert_close(outputs.logits, expected.logits, rtol=1e-4, atol=1e-5)
        for mask, expected_mask in zip(outputs.pred_masks, expected.pred_masks):
            torch.testing.assert_close(mask, expected_mask, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(outputs.loss, expected.loss, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# TRL
# ----------------------------------------------------------------------------------------------------------


def test_sft_trainer_trains_on_the_models_loss_and_logs_its_components(synthetic, tmp_path):
    trl = pytest.importorskip("trl")
    from transformers_self1e.training import Self1ESFTTrainer

    model, processor = tiny_model_and_processor()
    config = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Self1ESFTTrainer(
        model=model,
        args=config,
        train_dataset=synthetic,
        data_collator=Self1EDataCollator.from_model_config(processor, model.config),
        processing_class=processor,
    )
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 2
    weights = model.config
    for entry in logs:
        # The logged loss is the model's: text plus the weighted mask losses, not TRL's token loss.
        components = (
            weights.text_loss_weight * entry["text_loss"]
            + weights.bce_loss_weight * entry["mask_bce_loss"]
            + weights.dice_loss_weight * entry["mask_dice_loss"]
        )
        assert entry["mask_bce_loss"] > 0 and entry["loss"] == pytest.approx(components, abs=1e-3)


# ----------------------------------------------------------------------------------------------------------
# Resuming
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resuming_from_a_checkpoint_continues_the_schedule_and_the_weights(lora, synthetic, tmp_path):
    dataset = concatenate_datasets([synthetic] * 2)
    arguments = {
        "max_steps": 4,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
    }

    def run(output_dir, resume_from_checkpoint=None) -> Self1ETrainer:
        model, processor = tiny_model_and_processor()
        if lora:
            model = apply_lora(model, self1e_lora_config(rank=4, alpha=8, new_token_ids=[processor.seg_token_id]))
        trainer = Self1ETrainer(
            model=model,
            args=training_args(output_dir, **arguments),
            train_dataset=dataset,
            data_collator=Self1EDataCollator(processor),
        )
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        return trainer

    uninterrupted = run(tmp_path / "full")
    resumed = run(tmp_path / "resumed", resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))

    full_logs = {entry["step"]: entry for entry in step_logs(uninterrupted)}
    resumed_logs = {entry["step"]: entry for entry in step_logs(resumed)}
    # Steps 1-2 come with the checkpoint's trainer state, 3-4 are trained after resuming.
    assert sorted(resumed_logs) == [1, 2, 3, 4]
    assert len({full_logs[step]["learning_rate"] for step in full_logs}) > 1
    for step in (3, 4):
        assert resumed_logs[step]["learning_rate"] == full_logs[step]["learning_rate"]
        assert resumed_logs[step]["loss"] == pytest.approx(full_logs[step]["loss"], rel=1e-5)
    torch.testing.assert_close(resumed.model.state_dict(), uninterrupted.model.state_dict())


# ----------------------------------------------------------------------------------------------------------
# Gradient accumulation
# ----------------------------------------------------------------------------------------------------------


def sgd_step(samples: list[dict], batch_size: int, accumulation: int, output_dir) -> tuple[dict, float]:
    """One optimizer step of plain SGD (lr 0.1, no clipping) in dataset order: the weight change and logged loss."""
    model, processor = tiny_model_and_processor()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    args = training_args(
        output_dir,
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
    )
    trainer = Self1ETrainer(model=model, args=args, train_dataset=samples, data_collator=Self1EDataCollator(processor))
    trainer.train()
    delta = {name: tensor - before[name] for name, tensor in model.state_dict().items()}
    return delta, step_logs(trainer)[0]["loss"]


def test_accumulated_micro_batches_equal_one_batch_when_they_label_as_many_tokens(synthetic, tmp_path):
    # Every sample has one [SEG] and three labelled tokens, so the mean of the micro-batch means is the batch mean.
    samples = list(synthetic)
    full_delta, full_loss = sgd_step(samples, batch_size=4, accumulation=1, output_dir=tmp_path / "full")
    accumulated_delta, accumulated_loss = sgd_step(samples, batch_size=2, accumulation=2, output_dir=tmp_path / "ga")
    assert accumulated_loss == pytest.approx(full_loss, rel=1e-5)
    assert full_delta["seg_head.output_mlp.fc2.weight"].abs().sum() > 0
    torch.testing.assert_close(accumulated_delta, full_delta, rtol=1e-4, atol=1e-7)


def test_accumulation_averages_the_loss_of_each_micro_batch(synthetic, tmp_path):
    """The model's loss is a mean over each micro-batch (labelled tokens for text, samples for masks) and the Trainer
    divides it by the accumulation steps: the step follows the gradient of the mean of the micro-batch losses, which
    weighs a token of a short micro-batch more than one of a long micro-batch."""
    vqa = {"image": random_image(112, 112, seed=3), "prompt": "What is there?", "answer": "Some shapes, " * 6}
    samples = [*list(synthetic)[:3], vqa]
    accumulated_delta, accumulated_loss = sgd_step(samples, batch_size=2, accumulation=2, output_dir=tmp_path)

    model, processor = tiny_model_and_processor()
    collator = Self1EDataCollator(processor)
    micro_batch_losses = [model(**collator(samples[:2])).loss, model(**collator(samples[2:])).loss]
    mean_loss = sum(micro_batch_losses) / 2
    mean_loss.backward()
    expected_delta = {name: -0.1 * parameter.grad for name, parameter in model.named_parameters()}

    assert accumulated_loss == pytest.approx(mean_loss.item(), rel=1e-5)
    assert model(**collator(samples)).loss.item() != pytest.approx(mean_loss.item(), rel=1e-3)
    for name, expected in expected_delta.items():
        torch.testing.assert_close(accumulated_delta[name], expected, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# DDP default
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, checkpointing_kwargs, expected",
    [(None, None, True), (False, None, False), (None, {"use_reentrant": True}, None)],
)
def test_ddp_find_unused_parameters_default(given, checkpointing_kwargs, expected, synthetic, tmp_path):
    model, processor = tiny_model_and_processor()
    args = training_args(
        tmp_path, ddp_find_unused_parameters=given, activation_checkpointing_kwargs=checkpointing_kwargs
    )
    Self1ETrainer(model=model, args=args, train_dataset=synthetic, data_collator=Self1EDataCollator(processor))
    assert args.ddp_find_unused_parameters is expected
