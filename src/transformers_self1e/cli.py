"""`self1e` command line.

    self1e demo [--model PATH] [--out outputs/demo]
    self1e segment IMAGE "prompt" ["prompt" ...] [--model PATH] [--out mask.png] [--overlay overlay.png]
    self1e segment IMAGE --classes a,b,c [--out labels.png] [--masks-dir DIR] [--overlay overlay.png]
    self1e evaluate --dataset synthetic[:100] | SAVED_DATASET [--split validation] [--model PATH] [--out report.json]
    self1e predict --dataset synthetic[:100] | SAVED_DATASET --out PRED_DIR [--overwrite]   (needs 'data')
    accelerate launch [--num_processes N] -m transformers_self1e.cli evaluate|predict ...   (needs 'train')
    self1e export MODEL_OR_DIR --out DIR [--results results.json] ...   (as `python -m hub_upload export`)
    self1e push DIR --repo-id org/name [--dry-run] ...                  (as `python -m hub_upload push`)
    self1e app [--model PATH] [--host 127.0.0.1] [--port 7860] [--device cpu] [--dtype float32]   (needs 'app')

The commands that load a model take `--device`, `--dtype` and `--quantize int8|int4` (needs 'quantize'). Every command
runs on the core dependencies, except where it needs an extra (e.g. a saved dataset: `data`); then it says so in one
line and exits with code 2. Progress bars are drawn only when stderr is a terminal. Under `accelerate
launch`, `evaluate` and `predict` share the dataset's shards between the processes; the report, or the files, are
those of one process.
"""

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from transformers.utils import logging

from .app_command import add_app_command, run_app
from .cli_arguments import (
    add_model_placement_arguments,
    dataset_spec,
    image_side,
    model_dtype,
    non_negative_int,
    positive_int,
    probability_threshold,
)
from .demo import DEMO_EXAMPLES, DEMO_SHEET, SHIPPED_MODEL, mask_from_image, mask_iou, run_demo, save_mask
from .evaluation.metrics import format_metric
from .evaluation.sharded import DEFAULT_SHARD_SIZE, InferenceProcesses
from .hub_upload.__main__ import add_publish_commands, run as run_publish
from .input_files import read_image
from .model_folder import load_model_and_processor
from .modeling import Self1EForSegmentation, Self1EProcessor
from .output_files import check_output_files, check_output_folder, safe_file_name, save_image
from .visualize import draw_label_map, draw_overlay

# The optional packages (by import name) and the extra of pyproject.toml that installs each.
EXTRA_OF_PACKAGE = {
    "datasets": "data",
    "pycocotools": "data",
    "pyarrow": "data",
    "accelerate": "train",
    "peft": "train",
    "trl": "train",
    "gradio": "app",
    "torchao": "quantize",
    "bitsandbytes": "quantize",
}
# The commands that read a dataset, named with their --dataset in a missing-extra message.
DATASET_COMMANDS = ("evaluate", "predict")
# The metrics `self1e evaluate` prints, by name.
SUMMARY_METRICS = {"cIoU": "ciou", "gIoU": "giou", "N-acc": "n_acc", "T-acc": "t_acc"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="self1e", description="SELF1E: segment what a sentence describes.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="segment the shipped example images; write mask and overlay PNGs and a contact sheet, demo.png"
    )
    demo.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    demo.add_argument("--examples", default=str(DEMO_EXAMPLES), help="folder with examples.json (default: shipped)")
    demo.add_argument("--out", default="outputs/demo", help="folder for the PNGs and demo.png (default outputs/demo)")
    add_model_placement_arguments(demo)

    segment = commands.add_parser("segment", help="segment an image with text prompts or class names")
    segment.add_argument("image", help="image file")
    segment.add_argument("prompts", nargs="*", help="what to segment, e.g. 'the red circle on the left'")
    segment.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    segment.add_argument("--classes", help="comma-separated class names for a semantic map, instead of prompts")
    segment.add_argument(
        "--out",
        metavar="PNG",
        help="with prompts: the mask (255 inside, 0 outside; default mask.png), or with several prompts one mask per "
        "prompt, numbered in order (mask.png: mask-0.png, mask-1.png, ...; prompts may overlap); with --classes: one "
        "colour label map with a legend (default labels.png)",
    )
    segment.add_argument(
        "--masks-dir",
        metavar="DIR",
        help="also write each mask as DIR/<index>-<prompt or class>.png (255 inside, 0 outside)",
    )
    segment.add_argument(
        "--overlay",
        metavar="PNG",
        help="the image with each mask outlined in its own colour and a legend (prompt or class, score)",
    )
    segment.add_argument("--gt", help="ground-truth mask PNG (nonzero = object): print the IoU of the first mask")
    segment.add_argument(
        "--threshold", type=probability_threshold, default=0.5, help="probability threshold (default 0.5)"
    )
    segment.add_argument("--max-tiles", type=positive_int, help="tile large images into at most this many tiles")
    add_model_placement_arguments(segment)

    evaluate = commands.add_parser("evaluate", help="referring segmentation metrics (cIoU, gIoU, N-acc, T-acc)")
    evaluate.add_argument("--out", default="report.json", help="JSON report (default report.json)")
    add_dataset_run_arguments(evaluate)

    predict = commands.add_parser(
        "predict",
        help="write the masks of every sample of a dataset (COCO RLE in parquet shards, resumable; needs 'data')",
    )
    predict.add_argument(
        "--out",
        required=True,
        metavar="PRED_DIR",
        help="folder for predict.json and the predictions-*.parquet shards; a rerun of the same run resumes it",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="accept a folder holding something else, replacing only the files of predict runs",
    )
    add_dataset_run_arguments(predict)

    add_publish_commands(commands)
    add_app_command(commands)
    return parser


def add_dataset_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a command that segments a dataset (`evaluate`, `predict`): the data, the model, and how the
    rows are batched and shared between processes."""
    parser.add_argument(
        "--dataset",
        type=dataset_spec,
        required=True,
        help="synthetic[:N] (the first N synthetic samples of --seed), or a folder written by datasets' save_to_disk "
        "(PATH[:N] for its first N rows; needs the 'data' extra)",
    )
    parser.add_argument("--split", help="split of a saved DatasetDict (default: its only split)")
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    parser.add_argument(
        "--seed", type=non_negative_int, default=1, help="seed of the synthetic samples (default 1; training: 0)"
    )
    parser.add_argument(
        "--image-size", type=image_side, help="side of the synthetic images (default: the model's tile)"
    )
    parser.add_argument(
        "--threshold", type=probability_threshold, default=0.5, help="probability threshold (default 0.5)"
    )
    parser.add_argument("--max-tiles", type=positive_int, help="tile large images into at most this many tiles")
    add_model_placement_arguments(parser)
    parser.add_argument(
        "--batch-size", type=positive_int, default=1, help="dataset rows per segment() call (default 1)"
    )
    parser.add_argument(
        "--shard-size",
        type=positive_int,
        default=DEFAULT_SHARD_SIZE,
        help=f"rows per shard, the unit shared between processes (default {DEFAULT_SHARD_SIZE})",
    )


def mask_paths(out: Path, count: int) -> list[Path]:
    """The mask files of `count` prompts: `out` itself for one, `out` numbered by prompt for several."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{index}{out.suffix}") for index in range(count)]


def masks_dir_paths(folder: str, labels: list[str]) -> list[Path]:
    """`folder/<index>-<label>.png` for every prompt or class, the label made safe for a file name."""
    stems = [f"{index}-{safe_file_name(label)}".rstrip("-") for index, label in enumerate(labels)]
    return [Path(folder) / f"{stem}.png" for stem in stems]


def load_model(args: argparse.Namespace, device: str | None = None) -> tuple[Self1EForSegmentation, Self1EProcessor]:
    """The model of `--model` on `device` (default `--device`) in `--dtype`, quantized as `--quantize` says, and its
    processor."""
    return load_model_and_processor(args.model, device or args.device, model_dtype(args), args.quantize)


def run_segment(args: argparse.Namespace) -> int:
    if bool(args.prompts) == bool(args.classes):
        raise ValueError("give either prompts or --classes")
    classes = [name.strip() for name in args.classes.split(",")] if args.classes else None
    labels = classes or args.prompts
    image = read_image(args.image)
    gt = mask_from_image(read_image(args.gt)) if args.gt else None
    if gt is not None and gt.shape != (image.height, image.width):
        raise ValueError(
            f"the ground truth {args.gt} is {gt.shape[1]}x{gt.shape[0]} but the image is {image.width}x{image.height}"
        )
    # Every output is checked before the model runs, so a bad path cannot fail after some files were written.
    out = Path(args.out or ("labels.png" if classes else "mask.png"))
    # The mask files of each prompt or class: its --out file (prompts only), its --masks-dir file (when asked).
    mask_files = [[] for _ in labels] if classes else [[path] for path in mask_paths(out, len(labels))]
    if args.masks_dir:
        check_output_folder(args.masks_dir)
        for files, path in zip(mask_files, masks_dir_paths(args.masks_dir, labels)):
            files.append(path)
    outputs = [path for files in mask_files for path in files]
    outputs += [out] if classes else []
    outputs += [args.overlay] if args.overlay else []
    check_output_files(outputs, inputs=[args.image] + ([args.gt] if args.gt else []))

    model, processor = load_model(args)
    images_kwargs = {} if args.max_tiles is None else {"max_tiles": args.max_tiles}
    result = model.segment(
        image,
        args.prompts or None,
        classes=classes,
        processor=processor,
        threshold=args.threshold,
        show_progress=True,
        **images_kwargs,
    )
    for label, mask, score, empty, files in zip(
        result.prompts, result.masks, result.scores, result.no_target, mask_files
    ):
        for path in files:
            save_mask(mask, path)
        status = "no target" if empty else f"score {score:.3f}, {int(mask.sum())} px"
        print(f"{label!r}: {status}" + "".join(f" -> {path}" for path in files))
    if classes:
        save_image(draw_label_map(result.label_map, result.prompts), out)
        print(f"label map -> {out}")
    if args.overlay:
        save_image(draw_overlay(image, result.masks, result.prompts, result.scores), args.overlay)
        print(f"overlay -> {args.overlay}")
    if gt is not None:
        print(f"IoU with {args.gt}: {mask_iou(result.masks[0], gt):.4f}")
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    check_output_folder(args.out)
    model, processor = load_model(args)
    rows = run_demo(model, processor, args.out, folder=args.examples)
    width = max(len(row["prompt"]) for row in rows)
    for row in rows:
        found = "empty mask" if row["no_target"] else f"{row['pixels']} px"
        print(f"{row['name']:<24} {row['prompt']!r:<{width + 2}} IoU {row['iou']:.3f}  ({found}) -> {row['overlay']}")
    print(f"mean IoU {np.mean([row['iou'] for row in rows]):.3f} over {len(rows)} examples; masks in {args.out}")
    print(f"contact sheet -> {Path(args.out) / DEMO_SHEET}")
    return 0


def is_synthetic(args: argparse.Namespace) -> bool:
    return args.dataset.split("[")[0] == "synthetic"


def load_dataset_of(args: argparse.Namespace, tile_size: int):
    """The dataset of `--dataset`/`--split`; synthetic images are `--image-size` wide (default `tile_size`)."""
    from .data import SyntheticConfig
    from .evaluation.evaluate import load_evaluation_dataset

    image_size = tile_size if args.image_size is None else args.image_size
    return load_evaluation_dataset(
        args.dataset, split=args.split, seed=args.seed, synthetic_config=SyntheticConfig(image_size=image_size)
    )


def sharding_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `evaluate_sharded` and `predict_dataset` that the command line sets."""
    return {
        "batch_size": args.batch_size,
        "threshold": args.threshold,
        "images_kwargs": {} if args.max_tiles is None else {"max_tiles": args.max_tiles},
        "show_progress": True,
    }


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import write_report
    from .evaluation.sharded import evaluate_sharded

    check_output_files([args.out], suffix=".json")
    with contextlib.closing(InferenceProcesses.start(args.device)) as processes:
        model, processor = load_model(args, processes.device(args.device))
        dataset = load_dataset_of(args, model.config.tile_size)
        results = evaluate_sharded(
            model, processor, dataset, processes, shard_size=args.shard_size, **sharding_options(args)
        )
    if results is None:  # not the main process, which reports
        return 0
    report = {
        "model": str(Path(args.model).resolve()),
        "dataset": args.dataset,
        "split": args.split,
        "seed": args.seed if is_synthetic(args) else None,
        "threshold": args.threshold,
        "batch_size": args.batch_size,
        **results,
    }
    out = write_report(report, args.out)
    metrics = results["metrics"]
    scores = "  ".join(f"{name} {format_metric(metrics[key])}" for name, key in SUMMARY_METRICS.items())
    print(f"{scores}  ({metrics['num_samples']} samples) -> {out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    # The `data` extra, asked for before the model loads (pyarrow comes with its datasets).
    import pycocotools  # noqa: F401
    import pyarrow  # noqa: F401

    from .evaluation.predict import check_prediction_folder, is_finished, predict_dataset, prediction_run
    from .evaluation.sharded import plan_shards
    from .model_folder import check_model_folder

    config = check_model_folder(args.model)
    dataset = load_dataset_of(args, config.tile_size)
    shards = plan_shards(len(dataset), args.shard_size)
    synthetic = is_synthetic(args)
    # What the masks depend on: a rerun with the same values resumes the folder.
    identity = {
        "model": str(Path(args.model).resolve()),
        "dataset": args.dataset,
        "split": args.split,
        "seed": args.seed if synthetic else None,
        "image_size": (args.image_size or config.tile_size) if synthetic else None,
        "threshold": args.threshold,
        "max_tiles": args.max_tiles,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "num_rows": len(dataset),
    }
    run = prediction_run(identity, shards)
    check_prediction_folder(args.out, run, overwrite=args.overwrite)
    if is_finished(args.out, run, shards):
        print(f"all {len(shards)} shards are already there ({len(dataset)} rows) -> {args.out}")
        return 0
    with contextlib.closing(InferenceProcesses.start(args.device)) as processes:
        model, processor = load_model(args, processes.device(args.device))
        written = predict_dataset(
            model, processor, dataset, args.out, run, shards, processes, **sharding_options(args)
        )
    if processes.is_main_process:
        skipped = len(shards) - len(written)
        resumed = f", {skipped} already there" if skipped else ""
        print(f"{len(written)} of {len(shards)} shards written{resumed} ({len(dataset)} rows) -> {args.out}")
    return 0


@contextlib.contextmanager
def progress_bars_on_a_terminal_only() -> Iterator[None]:
    """Turns transformers' and huggingface_hub's progress bars off while stderr is not a terminal (a log file keeps
    no half-drawn bars)."""
    if sys.stderr.isatty() or not logging.is_progress_bar_enabled():
        yield
        return
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.enable_progress_bar()


def missing_extra_message(args: argparse.Namespace, error: ModuleNotFoundError) -> str | None:
    """The one-line error for a command that needs an optional package that is not installed; None when the missing
    module is not one of the extras' packages."""
    package = (error.name or "").split(".")[0]
    extra = EXTRA_OF_PACKAGE.get(package)
    if extra is None:
        return None
    command = f"self1e {args.command}" + (f" --dataset {args.dataset}" if args.command in DATASET_COMMANDS else "")
    if extra == "quantize":
        command += f" --quantize {args.quantize}"
    install = f"pip install 'transformers-self1e[{extra}]'"
    return f"{command} needs the '{extra}' extra ({package} is not installed): {install}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "demo": run_demo_command,
        "evaluate": run_evaluate,
        "predict": run_predict,
        "export": run_publish,
        "push": run_publish,
        "segment": run_segment,
        "app": run_app,
    }
    try:
        with progress_bars_on_a_terminal_only():
            return commands[args.command](args)
    except ModuleNotFoundError as error:
        message = missing_extra_message(args, error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
