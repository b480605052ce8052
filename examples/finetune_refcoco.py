"""Fine-tune SELF1E on RefCOCO, RefCOCO+ and RefCOCOg with the paper's recipe (Sec. 4.1, 7).

LoRA on the language model (rank, alpha and learning rate of `PAPER_RECIPES`: 128/256/1e-4 for 2B, 64/128/6e-5 for
8B), the segmentation head and projector trained in full, AdamW with a cosine schedule, an effective batch of 160
through gradient accumulation, bf16 autocast and activation checkpointing. The result is saved merged: a plain Self1E
folder with its processor.

1. Start from an InternVL3 base, converted to a Self1E folder (`[SEG]` added, segmentation head initialised):

    python -m transformers_self1e.convert internvl --checkpoint InternVL3-2B-hf --out self1e-2b-base --dtype bfloat16

2. Train, one process per GPU (the refer toolkit's layout: `REFER_ROOT/refcoco/refs(unc).p` + `instances.json`,
   `refcoco+/refs(unc).p`, `refcocog/refs(umd).p`; images from COCO train2014):

    accelerate launch --config_file examples/accelerate/ddp.yaml examples/finetune_refcoco.py \
        --model self1e-2b-base --recipe 2b --refer-root data/refer --coco-images data/coco/train2014 \
        --out self1e-2b-refcoco

Optionally mix in VQA (`--vqa-json`, LLaVA format) and ReasonSeg (`--reason-seg-dir`) at the sampling rates of
SELF1E-SEG (`SELF1E_SEG_RATES`, the default: referring data 20x, ReasonSeg 6x, VQA 1x) or of SELF1E (`--rates self1e`,
one pass over everything). Saving merged gathers nothing: it is meant for DDP; with FSDP or DeepSpeed ZeRO-3 save the
adapter (`--no-merge`) and merge it afterwards.
"""

import argparse
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import concatenate_datasets
from transformers import TrainingArguments
from transformers.utils import logging

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.data import (
    SELF1E_RATES,
    SELF1E_SEG_RATES,
    load_llava_vqa,
    load_reason_seg,
    load_referring_segmentation,
    mix_datasets,
)
from transformers_self1e.training import (
    PAPER_RECIPES,
    Self1EDataCollator,
    Self1ETrainer,
    apply_lora,
    save_self1e,
    self1e_lora_config,
)

logger = logging.get_logger("finetune_refcoco")

REFS_FILES = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}
RATES = {"self1e": SELF1E_RATES, "self1e-seg": SELF1E_SEG_RATES}
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Self1E folder (from `transformers_self1e.convert internvl`)")
    parser.add_argument("--out", required=True, help="folder for the fine-tuned model and its processor")
    parser.add_argument("--recipe", choices=sorted(PAPER_RECIPES), default="2b", help="paper hyper-parameters")

    data = parser.add_argument_group("data")
    data.add_argument("--refer-root", required=True, help="folder holding refcoco/, refcoco+/, refcocog/")
    data.add_argument("--coco-images", required=True, help="COCO train2014 image folder")
    data.add_argument("--refer-datasets", nargs="+", choices=sorted(REFS_FILES), default=sorted(REFS_FILES))
    data.add_argument("--expressions-per-image", type=int, default=3, help="expressions drawn per image (default 3)")
    data.add_argument("--vqa-json", help="LLaVA-format VQA conversations to mix in")
    data.add_argument("--vqa-images", help="image folder of --vqa-json")
    data.add_argument("--reason-seg-dir", help="ReasonSeg train folder to mix in")
    data.add_argument(
        "--rates", choices=sorted(RATES), default="self1e-seg", help="sampling rates (default self1e-seg)"
    )
    data.add_argument(
        "--max-tiles", type=int, help="tile images into at most this many tiles (default: the processor's)"
    )
    data.add_argument("--max-length", type=int, help="cut sequences to this many tokens")

    training = parser.add_argument_group("training")
    training.add_argument("--per-device-batch-size", type=int, default=4)
    training.add_argument("--effective-batch-size", type=int, help="default: the recipe's (160)")
    training.add_argument("--learning-rate", type=float, help="default: the recipe's")
    training.add_argument("--epochs", type=float, default=1.0)
    training.add_argument("--warmup", type=float, default=0.03, help="warmup steps, or a fraction of all steps")
    training.add_argument("--lora-dropout", type=float, default=0.05)
    training.add_argument("--lora-vision-tower", action="store_true", help="LoRA on the vision tower too")
    training.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="dtype of the frozen weights")
    training.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast")
    training.add_argument("--output-dir", default="checkpoints", help="Trainer checkpoints and logs")
    training.add_argument("--save-steps", type=int, default=500)
    training.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output-dir")
    training.add_argument("--num-workers", type=int, default=4, help="data loader processes per GPU")
    training.add_argument("--report-to", nargs="*", default=["tensorboard"])
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--no-merge", action="store_true", help="save the adapter instead of a merged model")
    return parser


def gradient_accumulation_steps(effective_batch_size: int, per_device_batch_size: int, world_size: int) -> int:
    """Steps that make `per_device_batch_size * world_size * steps` closest to `effective_batch_size`."""
    per_step = per_device_batch_size * world_size
    steps = max(1, round(effective_batch_size / per_step))
    if steps * per_step != effective_batch_size:
        logger.warning(
            f"effective batch {steps * per_step} instead of {effective_batch_size} ({world_size} processes)"
        )
    return steps


def build_dataset(args: argparse.Namespace):
    """RefCOCO/+/g training rows, mixed with the optional VQA and ReasonSeg rows at the chosen rates."""
    root = Path(args.refer_root)
    referring = concatenate_datasets(
        [
            load_referring_segmentation(
                root / name / REFS_FILES[name],
                root / name / "instances.json",
                args.coco_images,
                split="train",
                expressions_per_image=args.expressions_per_image,
                seed=args.seed,
                source=name,
            )
            for name in args.refer_datasets
        ]
    )
    rates = RATES[args.rates]
    parts = {"referring": (referring, rates["referring"])}
    if args.vqa_json:
        parts["vqa"] = (load_llava_vqa(args.vqa_json, args.vqa_images), rates["vqa"])
    if args.reason_seg_dir:
        parts["reasoning"] = (load_reason_seg(args.reason_seg_dir, seed=args.seed), rates["reasoning"])
    return mix_datasets(parts, seed=args.seed)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.vqa_json) != bool(args.vqa_images):
        parser.error("--vqa-json and --vqa-images go together")
    recipe = PAPER_RECIPES[args.recipe]
    world_size = PartialState().num_processes
    dataset = build_dataset(args)

    dtype = DTYPES[args.dtype]
    model = Self1EForSegmentation.from_pretrained(args.model, dtype=dtype)
    processor = Self1EProcessor.from_pretrained(args.model)
    model.activation_checkpointing_enable()
    lora_config = self1e_lora_config(
        rank=recipe.lora_rank,
        alpha=recipe.lora_alpha,
        dropout=args.lora_dropout,
        train_vision_tower=args.lora_vision_tower,
        new_token_ids=[model.config.seg_token_id],
    )
    model = apply_lora(model, lora_config)
    # Optimizer states and updates in float32; the frozen weights stay in `dtype`, bf16 autocast does the rest.
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    model.print_trainable_parameters()

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps(
            args.effective_batch_size or recipe.effective_batch_size, args.per_device_batch_size, world_size
        ),
        learning_rate=args.learning_rate or recipe.learning_rate,
        optim="adamw_torch",
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup,
        weight_decay=0.0,
        bf16=args.bf16,
        logging_steps=10,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        dataloader_num_workers=args.num_workers,
        remove_unused_columns=False,
        report_to=args.report_to,
        seed=args.seed,
    )
    images_kwargs = {} if args.max_tiles is None else {"max_tiles": args.max_tiles}
    trainer = Self1ETrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=Self1EDataCollator.from_model_config(
            processor, model.config, max_length=args.max_length, images_kwargs=images_kwargs
        ),
    )
    trainer.train(resume_from_checkpoint=True if args.resume else None)

    if trainer.accelerator.is_main_process:
        out = save_self1e(trainer.model.to(dtype), args.out, merge=not args.no_merge)
        processor.save_pretrained(out)
        logger.warning(f"saved {'the adapter' if args.no_merge else 'the merged model'} to {out}")
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
