"""`self1e` command line.

    self1e demo [--model PATH] [--out outputs/demo]
    self1e segment IMAGE "prompt" ["prompt" ...] [--model PATH] [--out mask.png] [--overlay overlay.png]
    self1e segment IMAGE --classes a,b,c [--out labels.png] [--masks-dir DIR] [--overlay overlay.png]
    self1e evaluate --dataset synthetic[:100] | SAVED_DATASET [--split validation] [--model PATH] [--out report.json]
    self1e export MODEL_OR_DIR --out DIR [--results results.json] ...   (as `python -m hub_upload export`)
    self1e push DIR --repo-id org/name [--dry-run] ...                  (as `python -m hub_upload push`)
    self1e app [--model PATH] [--host 127.0.0.1] [--port 7860] [--device cpu] [--dtype float32]   (needs 'app')

Every command runs on the core dependencies, except where it needs an extra (e.g. a saved dataset: `data`); then it
says so in one line and exits with code 2. Progress bars are drawn only when stderr is a terminal.
"""

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging

from .app_command import add_app_command, run_app
from .cli_arguments import (
    dataset_spec,
    image_side,
    non_negative_int,
    positive_int,
    probability_threshold,
    torch_device,
)
from .demo import DEMO_EXAMPLES, DEMO_SHEET, SHIPPED_MODEL, mask_from_image, mask_iou, run_demo, save_mask
from .evaluation.metrics import format_metric
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
    "accelerate": "train",
    "peft": "train",
    "trl": "train",
    "gradio": "app",
}
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
    demo.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cuda")
    demo.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")

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
    segment.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cuda")
    segment.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")

    evaluate = commands.add_parser("evaluate", help="referring segmentation metrics (cIoU, gIoU, N-acc, T-acc)")
    evaluate.add_argument(
        "--dataset",
        type=dataset_spec,
        required=True,
        help="synthetic[:N] (the first N synthetic samples of --seed), or a folder written by datasets' save_to_disk "
        "(PATH[:N] for its first N rows; needs the 'data' extra)",
    )
    evaluate.add_argument("--split", help="split of a saved DatasetDict (default: its only split)")
    evaluate.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    evaluate.add_argument("--out", default="report.json", help="JSON report (default report.json)")
    evaluate.add_argument(
        "--seed", type=non_negative_int, default=1, help="seed of the synthetic samples (default 1; training: 0)"
    )
    evaluate.add_argument(
        "--image-size", type=image_side, help="side of the synthetic images (default: the model's tile)"
    )
    evaluate.add_argument(
        "--threshold", type=probability_threshold, default=0.5, help="probability threshold (default 0.5)"
    )
    evaluate.add_argument("--max-tiles", type=positive_int, help="tile large images into at most this many tiles")
    evaluate.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cuda")
    evaluate.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")

    add_publish_commands(commands)
    add_app_command(commands)
    return parser


def mask_paths(out: Path, count: int) -> list[Path]:
    """The mask files of `count` prompts: `out` itself for one, `out` numbered by prompt for several."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{index}{out.suffix}") for index in range(count)]


def masks_dir_paths(folder: str, labels: list[str]) -> list[Path]:
    """`folder/<index>-<label>.png` for every prompt or class, the label made safe for a file name."""
    stems = [f"{index}-{safe_file_name(label)}".rstrip("-") for index, label in enumerate(labels)]
    return [Path(folder) / f"{stem}.png" for stem in stems]


def load_model(args: argparse.Namespace) -> tuple[Self1EForSegmentation, Self1EProcessor]:
    """The model of `--model` on `--device` in `--dtype`, and its processor."""
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    return load_model_and_processor(args.model, args.device, dtype)


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
    image_kwargs = {} if args.max_tiles is None else {"max_tiles": args.max_tiles}
    result = model.segment(
        image,
        args.prompts or None,
        classes=classes,
        processor=processor,
        threshold=args.threshold,
        show_progress=True,
        **image_kwargs,
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


def run_evaluate(args: argparse.Namespace) -> int:
    from .data import SyntheticConfig
    from .evaluation.evaluate import evaluate_referring, load_evaluation_dataset, write_report

    synthetic = args.dataset.split("[")[0] == "synthetic"
    check_output_files([args.out], suffix=".json")
    model, processor = load_model(args)
    image_size = model.config.tile_size if args.image_size is None else args.image_size
    dataset = load_evaluation_dataset(
        args.dataset, split=args.split, seed=args.seed, synthetic_config=SyntheticConfig(image_size=image_size)
    )
    results = evaluate_referring(
        model,
        processor,
        dataset,
        threshold=args.threshold,
        image_kwargs={} if args.max_tiles is None else {"max_tiles": args.max_tiles},
        show_progress=True,
    )
    report = {
        "model": str(Path(args.model).resolve()),
        "dataset": args.dataset,
        "split": args.split,
        "seed": args.seed if synthetic else None,
        "threshold": args.threshold,
        **results,
    }
    out = write_report(report, args.out)
    metrics = results["metrics"]
    scores = "  ".join(f"{name} {format_metric(metrics[key])}" for name, key in SUMMARY_METRICS.items())
    print(f"{scores}  ({metrics['num_samples']} samples) -> {out}")
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
    command = f"self1e {args.command}" + (f" --dataset {args.dataset}" if args.command == "evaluate" else "")
    install = f"pip install 'transformers-self1e[{extra}]'"
    return f"{command} needs the '{extra}' extra ({package} is not installed): {install}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "demo": run_demo_command,
        "evaluate": run_evaluate,
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
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
