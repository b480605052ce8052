"""`self1e` command line.

    self1e demo [--model PATH] [--out outputs/demo]
    self1e segment IMAGE "prompt" [--model PATH] [--out mask.png] [--overlay overlay.png]
    self1e evaluate --dataset synthetic[:100] | SAVED_DATASET [--split validation] [--model PATH] [--out report.json]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .demo import DEMO_EXAMPLES, SHIPPED_MODEL, mask_iou, overlay, read_mask, run_demo, save_mask
from .modeling import Self1EForSegmentation, Self1EProcessor


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="self1e", description="SELF1E: segment what a sentence describes.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="segment the shipped example images, write mask and overlay PNGs")
    demo.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    demo.add_argument("--examples", default=str(DEMO_EXAMPLES), help="folder with examples.json (default: shipped)")
    demo.add_argument("--out", default="outputs/demo", help="folder for the PNGs (default outputs/demo)")
    demo.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    demo.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")

    segment = commands.add_parser("segment", help="segment an image with text prompts or class names")
    segment.add_argument("image", help="image file")
    segment.add_argument("prompts", nargs="*", help="what to segment, e.g. 'the red circle on the left'")
    segment.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    segment.add_argument("--classes", help="comma-separated class names for a semantic map, instead of prompts")
    segment.add_argument("--out", default="mask.png", help="mask PNG; with several prompts, mask-0.png, mask-1.png, ...")
    segment.add_argument("--overlay", help="write the image with the masks drawn over it to this PNG")
    segment.add_argument("--gt", help="ground-truth mask PNG (nonzero = object): print the IoU of the first mask")
    segment.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    segment.add_argument("--max-tiles", type=int, help="tile large images into at most this many tiles")
    segment.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    segment.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")

    evaluate = commands.add_parser("evaluate", help="referring segmentation metrics (cIoU, gIoU, N-acc, T-acc)")
    evaluate.add_argument(
        "--dataset",
        required=True,
        help="synthetic[:N] (the first N synthetic samples of --seed), or a folder written by datasets' save_to_disk "
        "(PATH[:N] for its first N rows)",
    )
    evaluate.add_argument("--split", help="split of a saved DatasetDict (default: its only split)")
    evaluate.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    evaluate.add_argument("--out", default="report.json", help="JSON report (default report.json)")
    evaluate.add_argument("--seed", type=int, default=1, help="seed of the synthetic samples (default 1; training: 0)")
    evaluate.add_argument("--image-size", type=int, help="side of the synthetic images (default: the model's tile)")
    evaluate.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    evaluate.add_argument("--max-tiles", type=int, help="tile large images into at most this many tiles")
    evaluate.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    evaluate.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    return parser


def mask_paths(out: str, count: int) -> list[Path]:
    path = Path(out)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{index}{path.suffix or '.png'}") for index in range(count)]


def load_model(args: argparse.Namespace) -> tuple[Self1EForSegmentation, Self1EProcessor]:
    """The model of `--model` on `--device` in `--dtype`, and its processor."""
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no model at {model_dir}: pass --model with a Self1E folder")
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model = Self1EForSegmentation.from_pretrained(model_dir, dtype=dtype).to(args.device).eval()
    return model, Self1EProcessor.from_pretrained(model_dir)


def run_segment(args: argparse.Namespace) -> int:
    if bool(args.prompts) == bool(args.classes):
        raise ValueError("give either prompts or --classes")
    model, processor = load_model(args)
    image = PIL.Image.open(args.image)
    image_kwargs = {} if args.max_tiles is None else {"max_tiles": args.max_tiles}
    classes = [name.strip() for name in args.classes.split(",")] if args.classes else None
    result = model.segment(
        image,
        args.prompts or None,
        classes=classes,
        processor=processor,
        threshold=args.threshold,
        show_progress=True,
        **image_kwargs,
    )
    for path, label, mask, score, empty in zip(
        mask_paths(args.out, len(result.prompts)), result.prompts, result.masks, result.scores, result.no_target
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_mask(mask, path)
        status = "no target" if empty else f"score {score:.3f}, {int(mask.sum())} px"
        print(f"{label!r}: {status} -> {path}")
    if args.overlay:
        overlay(image, result.masks).save(args.overlay)
        print(f"overlay -> {args.overlay}")
    if args.gt:
        print(f"IoU with {args.gt}: {mask_iou(result.masks[0], read_mask(args.gt)):.4f}")
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    model, processor = load_model(args)
    rows = run_demo(model, processor, args.out, folder=args.examples)
    width = max(len(row["prompt"]) for row in rows)
    for row in rows:
        found = "empty mask" if row["no_target"] else f"{row['pixels']} px"
        print(f"{row['name']:<24} {row['prompt']!r:<{width + 2}} IoU {row['iou']:.3f}  ({found}) -> {row['overlay']}")
    print(f"mean IoU {np.mean([row['iou'] for row in rows]):.3f} over {len(rows)} examples; masks in {args.out}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from .data import SyntheticConfig
    from .evaluation.evaluate import evaluate_referring, load_evaluation_dataset, write_report

    synthetic = args.dataset.split("[")[0] == "synthetic"
    model, processor = load_model(args)
    image_size = args.image_size or model.config.tile_size
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
    print(
        f"cIoU {metrics['ciou']:.4f}  gIoU {metrics['giou']:.4f}  N-acc {metrics['n_acc']:.4f}  "
        f"T-acc {metrics['t_acc']:.4f}  ({metrics['num_samples']} samples) -> {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"demo": run_demo_command, "evaluate": run_evaluate, "segment": run_segment}
        return commands[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
