"""`self1e` command line.

    self1e segment IMAGE "prompt" [--model PATH] [--out mask.png] [--overlay overlay.png]
    self1e evaluate --dataset synthetic[:100] | SAVED_DATASET [--split validation] [--model PATH] [--out report.json]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .modeling import Self1EForSegmentation, Self1EProcessor

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "self1e-tiny-synthetic"
OVERLAY_COLORS = np.array(
    [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)],
    dtype=np.float32,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="self1e", description="SELF1E: segment what a sentence describes.")
    commands = parser.add_subparsers(dest="command", required=True)
    segment = commands.add_parser("segment", help="segment an image with text prompts or class names")
    segment.add_argument("image", help="image file")
    segment.add_argument("prompts", nargs="*", help="what to segment, e.g. 'the red circle on the left'")
    segment.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder (default: the shipped model)")
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
    evaluate.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder (default: the shipped model)")
    evaluate.add_argument("--out", default="report.json", help="JSON report (default report.json)")
    evaluate.add_argument("--seed", type=int, default=1, help="seed of the synthetic samples (default 1; training: 0)")
    evaluate.add_argument("--image-size", type=int, default=224, help="side of the synthetic images (default 224)")
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


def overlay(image: PIL.Image.Image, masks: torch.Tensor, alpha: float = 0.5) -> PIL.Image.Image:
    """The image with each mask tinted in its own colour."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for index, mask in enumerate(masks.numpy()):
        color = OVERLAY_COLORS[index % len(OVERLAY_COLORS)]
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * color
    return PIL.Image.fromarray(canvas.round().astype(np.uint8))


def intersection_over_union(mask: torch.Tensor, gt_path: str) -> float:
    gt = torch.from_numpy(np.asarray(PIL.Image.open(gt_path).convert("L")) > 0)
    if gt.shape != mask.shape:
        raise ValueError(f"--gt is {tuple(gt.shape)} but the image is {tuple(mask.shape)}")
    union = (gt | mask).sum().item()
    return 1.0 if union == 0 else (gt & mask).sum().item() / union


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
        PIL.Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(path)
        status = "no target" if empty else f"score {score:.3f}, {int(mask.sum())} px"
        print(f"{label!r}: {status} -> {path}")
    if args.overlay:
        overlay(image, result.masks).save(args.overlay)
        print(f"overlay -> {args.overlay}")
    if args.gt:
        print(f"IoU with {args.gt}: {intersection_over_union(result.masks[0], args.gt):.4f}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from .data import SyntheticConfig
    from .evaluation.evaluate import evaluate_referring, load_evaluation_dataset, write_report

    synthetic = args.dataset.split("[")[0] == "synthetic"
    dataset = load_evaluation_dataset(
        args.dataset, split=args.split, seed=args.seed, synthetic_config=SyntheticConfig(image_size=args.image_size)
    )
    model, processor = load_model(args)
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
        return run_evaluate(args) if args.command == "evaluate" else run_segment(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
