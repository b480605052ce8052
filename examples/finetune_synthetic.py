"""Train a small SELF1E from scratch on the CPU on the synthetic shapes data, then evaluate it on held-out samples.

Each training row is one synthetic scene with `--expressions-per-image` referring expressions, asked as that many
question/`[SEG]` answer turns (several targets per image, as LISA-style training samples them: the same image with
different sentences and masks is what forces the `[SEG]` state to depend on the text). The tokenizer is a small
byte-level BPE learnt from the training prompts; the model is a `Self1EConfig` of the sizes given by the flags. The
defaults are the recipe of the shipped model (`make shipped-model`). The folder written to `--out` holds the model,
its processor and `eval.json` (cIoU, gIoU, N-acc, T-acc on `--eval-samples` samples of `--eval-seed`):

    python examples/finetune_synthetic.py --out self1e-synthetic
    self1e segment image.png "the red circle" --model self1e-synthetic

`--init-model DIR` continues training a saved model (its weights, tokenizer and sizes; the size flags are ignored) on
freshly drawn data, e.g. with more expressions per image or more no-target expressions than its first stage; with
`--grow-text-depth N` its language model is first deepened to N layers, the new ones starting as the identity.
`--grid-position-code` adds a 2-D sine-cosine code of the patch grid to the ViT's learnt absolute position embeddings
(zeros in a new model), so that a patch's column is as readable as its row, which the LLM's raster order already gives.
Both are `transformers_self1e.training.model_growth`.
"""

import argparse
import random
from pathlib import Path

from datasets import load_from_disk
from transformers import TrainingArguments, set_seed

from transformers_self1e import Self1EForSegmentation, Self1EImageProcessor, Self1EProcessor
from transformers_self1e.data import SyntheticConfig, make_synthetic_referring_dataset, make_synthetic_scene_dataset
from transformers_self1e.evaluation.evaluate import evaluate_referring, write_report
from transformers_self1e.modeling.configuration_self1e import IMAGE_FEATURE_PATHS, SEGMENTATION_ATTENTIONS
from transformers_self1e.modeling.prompts_self1e import build_segmentation_conversation
from transformers_self1e.presets import tiny_config
from transformers_self1e.training import (
    Self1EDataCollator,
    Self1ETrainer,
    add_grid_position_code,
    deepen_language_model,
)
from transformers_self1e.training.small_tokenizer import train_small_tokenizer

TOKENIZER_SCENES = 20000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the model, its processor and eval.json")

    data = parser.add_argument_group("data")
    data.add_argument("--num-samples", type=int, default=20000, help="training scenes (default 20000)")
    data.add_argument(
        "--expressions-per-image",
        type=int,
        default=3,
        help="expressions (one question/[SEG] answer turn each) per training image (default 3)",
    )
    data.add_argument(
        "--train-dataset",
        help="a `make_synthetic_scene_dataset` saved with `save_to_disk`, instead of generating --num-samples scenes",
    )
    data.add_argument("--seed", type=int, default=0, help="seed of the training samples and of training")
    data.add_argument("--num-proc", type=int, help="processes that draw the training scenes and their prompts")
    data.add_argument("--eval-samples", type=int, default=200, help="held-out samples to evaluate on (default 200)")
    data.add_argument("--eval-seed", type=int, default=1, help="seed of the held-out samples (default 1)")
    data.add_argument("--image-size", type=int, help="side of the synthetic images (default: the tile size)")
    data.add_argument(
        "--no-target-rate", type=float, default=0.1, help="share of expressions that match no object (default 0.1)"
    )
    data.add_argument(
        "--prompts",
        choices=("training", "validation"),
        default="training",
        help="the paper's training question/answer families, or only the validation prompt that segment() uses",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--init-model",
        help="continue training this model folder (weights, processor and sizes) instead of a new model of the flags",
    )
    model.add_argument(
        "--grow-text-depth",
        type=int,
        help="with --init-model: append language-model layers up to this depth, each starting as the identity",
    )
    model.add_argument(
        "--grid-position-code",
        action="store_true",
        help="add a 2-D sine-cosine code of the patch grid to the ViT position embeddings before training",
    )
    model.add_argument("--tile-size", type=int, default=64, help="side of an image tile (default 64)")
    model.add_argument("--patch-size", type=int, default=4, help="ViT patch side; tile/patch must be even (default 4)")
    model.add_argument("--vision-width", type=int, default=96)
    model.add_argument("--vision-depth", type=int, default=3)
    model.add_argument("--vision-heads", type=int, default=4)
    model.add_argument("--text-width", type=int, default=128)
    model.add_argument("--text-depth", type=int, default=3)
    model.add_argument("--text-heads", type=int, default=4)
    model.add_argument("--text-kv-heads", type=int, default=2)
    model.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary learnt for the tokenizer")
    model.add_argument(
        "--image-feature-path",
        choices=IMAGE_FEATURE_PATHS,
        default="residual_amplifier",
        help="image features the mask is read from (paper Table 5; default: RFR + RFA)",
    )
    model.add_argument(
        "--segmentation-attention",
        choices=SEGMENTATION_ATTENTIONS,
        default="bidirectional_image_with_seg",
        help="attention of the image tokens (paper Table 7; default: bidirectional, and they see [SEG])",
    )

    training = parser.add_argument_group("training")
    training.add_argument("--max-steps", type=int, default=5000)
    training.add_argument("--batch-size", type=int, default=16)
    training.add_argument("--learning-rate", type=float, default=1e-3)
    training.add_argument("--warmup", type=float, default=0.05, help="warmup steps, or a fraction of all steps")
    training.add_argument("--logging-steps", type=int, default=250)
    training.add_argument("--dataloader-workers", type=int, default=0, help="processes that build the batches")
    training.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (default: only the end)")
    training.add_argument("--text-loss-weight", type=float, default=1.0, help="weight of the next-token loss")
    training.add_argument("--bce-loss-weight", type=float, default=2.0, help="weight of the mask BCE loss")
    training.add_argument("--dice-loss-weight", type=float, default=0.5, help="weight of the mask Dice loss")
    return parser


def with_training_prompts(dataset, seed: int, prompts: str = "training", num_proc: int | None = None):
    """A `conversation` column: one question and answer turn per expression of the row (the image goes with the
    first), in the paper's training families drawn by `seed` and row (`prompts="training"`), or all in the one
    validation prompt that `segment()` uses."""

    def conversation(expressions: list[str], index: int) -> dict:
        rng = random.Random(f"{seed}:{index}") if prompts == "training" else None
        turns = []
        for expression in expressions:
            question, answer = build_segmentation_conversation(expression, rng=rng)
            if turns:
                question["content"] = [item for item in question["content"] if item["type"] != "image"]
            turns += [question, answer]
        return {"conversation": turns}

    return dataset.map(conversation, input_columns="expressions", with_indices=True, num_proc=num_proc)


def conversation_texts(conversation: list[dict]) -> list[str]:
    return [item["text"] for message in conversation for item in message["content"] if item.get("text")]


def build_processor(train_dataset, args: argparse.Namespace) -> Self1EProcessor:
    """A processor whose tokenizer is learnt from the training prompts and the validation prompt of `segment`, of the
    first `TOKENIZER_SCENES` scenes (the expressions' vocabulary is closed; more scenes add no words)."""
    texts = []
    corpus = train_dataset.select(range(min(len(train_dataset), TOKENIZER_SCENES)))
    for expressions, conversation in zip(corpus["expressions"], corpus["conversation"]):
        texts += conversation_texts(conversation)
        for expression in expressions:
            texts += conversation_texts(build_segmentation_conversation(expression))
    tokenizer = train_small_tokenizer(texts, vocab_size=args.vocab_size)
    image_seq_length = (args.tile_size // args.patch_size // 2) ** 2
    return Self1EProcessor(Self1EImageProcessor(size=args.tile_size), tokenizer, image_seq_length=image_seq_length)


def build_model(processor: Self1EProcessor, args: argparse.Namespace) -> Self1EForSegmentation:
    config = tiny_config(
        vision_config={
            "hidden_size": args.vision_width,
            "intermediate_size": 4 * args.vision_width,
            "num_hidden_layers": args.vision_depth,
            "num_attention_heads": args.vision_heads,
            "image_size": args.tile_size,
            "patch_size": args.patch_size,
        },
        text_config={
            "vocab_size": len(processor.tokenizer),
            "hidden_size": args.text_width,
            "intermediate_size": 4 * args.text_width,
            "num_hidden_layers": args.text_depth,
            "num_attention_heads": args.text_heads,
            "num_key_value_heads": args.text_kv_heads,
        },
        image_token_id=processor.image_token_id,
        seg_token_id=processor.seg_token_id,
        image_seq_length=processor.image_seq_length,
        image_feature_path=args.image_feature_path,
        segmentation_attention=args.segmentation_attention,
        text_loss_weight=args.text_loss_weight,
        bce_loss_weight=args.bce_loss_weight,
        dice_loss_weight=args.dice_loss_weight,
    )
    processor.check_model_config(config)
    return Self1EForSegmentation(config)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.init_model:
        processor = Self1EProcessor.from_pretrained(args.init_model)
        model = Self1EForSegmentation.from_pretrained(args.init_model)
        if args.grow_text_depth:
            model = deepen_language_model(model, args.grow_text_depth)
    elif args.grow_text_depth:
        raise ValueError("--grow-text-depth grows an --init-model; for a new model give --text-depth")
    tile_size = model.config.tile_size if args.init_model else args.tile_size
    synthetic_config = SyntheticConfig(image_size=args.image_size or tile_size, no_target_rate=args.no_target_rate)
    if args.train_dataset:
        samples = load_from_disk(args.train_dataset)
    else:
        samples = make_synthetic_scene_dataset(
            args.num_samples, args.seed, args.expressions_per_image, synthetic_config, num_proc=args.num_proc
        )
    train_dataset = with_training_prompts(samples, args.seed, args.prompts, num_proc=args.num_proc)
    if not args.init_model:
        processor = build_processor(train_dataset, args)
        # Trainer seeds only when it is built; the weights are initialised before that.
        set_seed(args.seed)
        model = build_model(processor, args)
    if args.grid_position_code:
        add_grid_position_code(model)

    training_args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup,
        logging_steps=args.logging_steps,
        dataloader_num_workers=args.dataloader_workers,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        report_to="none",
        remove_unused_columns=False,
        seed=args.seed,
    )
    trainer = Self1ETrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=Self1EDataCollator.from_model_config(processor, model.config),
        processing_class=processor,
    )
    trainer.train()
    trainer.save_model(str(out))

    eval_config = SyntheticConfig(image_size=synthetic_config.image_size)
    eval_dataset = make_synthetic_referring_dataset(args.eval_samples, args.eval_seed, eval_config)
    report = evaluate_referring(model.eval(), processor, eval_dataset, show_progress=True)
    write_report({"dataset": f"synthetic[:{args.eval_samples}]", "seed": args.eval_seed, **report}, out / "eval.json")
    metrics = report["metrics"]
    print(f"held-out cIoU {metrics['ciou']:.4f}  gIoU {metrics['giou']:.4f} -> {out}")
    return report


if __name__ == "__main__":
    main()
