"""Argument types of the `self1e` command line: each checks one option as argparse parses it, so that a bad value is
a usage error naming the option (exit code 2) before any model loads, never a traceback or a silent default."""

import argparse
import math

import torch

from .modeling.image_processing_self1e import DEFAULT_MAX_IMAGE_PIXELS
from .quantization import QUANTIZATION_SCHEMES

# Accelerator backends `--device` accepts beside the CPU, by `torch.device` type: the module that tells whether one
# is present and how many there are.
ACCELERATORS = {"cuda": torch.cuda, "mps": torch.mps, "xpu": torch.xpu}


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    return _integer_at_least(text, 1)


def image_side(text: str) -> int:
    """An argparse type: the side of a square image, at least 1 and small enough for the image processor's default
    `max_image_pixels` (a larger image would be generated, then refused)."""
    side = positive_int(text)
    if side * side > DEFAULT_MAX_IMAGE_PIXELS:
        raise argparse.ArgumentTypeError(
            f"{side}x{side} px is more than the {DEFAULT_MAX_IMAGE_PIXELS} pixels an image may have"
        )
    return side


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    return _integer_at_least(text, 0)


def _integer_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def probability_threshold(text: str) -> float:
    """An argparse type: a probability strictly between 0 and 1 (0 or 1 would make every mask full or empty)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def torch_device(text: str) -> str:
    """An argparse type: a torch device that this machine has (`cpu`, `cuda`, `cuda:1`, `mps`, `xpu`)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a torch device; use e.g. cpu, cuda, cuda:1 or mps"
        ) from None
    if device.type == "cpu":
        return text
    if device.type not in ACCELERATORS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device to run on; use cpu, {', '.join(ACCELERATORS)}")
    backend = ACCELERATORS[device.type]
    if not backend.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this torch build or machine has no {device.type} device")
    count = backend.device_count()
    if device.index is not None and device.index >= count:
        raise argparse.ArgumentTypeError(f"{text!r}: there is no {device.type} device {device.index}, only {count}")
    return text


def dataset_spec(text: str) -> str:
    """An argparse type: `synthetic`, a saved dataset's folder, either with an optional `[:N]` (N >= 1)."""
    from .evaluation.evaluate import parse_dataset_spec

    try:
        parse_dataset_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_model_placement_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device`, `--dtype` and `--quantize`, which every command that loads a model takes."""
    parser.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATION_SCHEMES,
        help="8-bit or 4-bit weights: bitsandbytes on CUDA, torchao elsewhere (needs the 'quantize' extra)",
    )


def model_dtype(args: argparse.Namespace) -> torch.dtype:
    """The torch dtype of `--dtype`."""
    return torch.bfloat16 if args.dtype == "bfloat16" else torch.float32


__all__ = [
    "add_model_placement_arguments",
    "dataset_spec",
    "image_side",
    "model_dtype",
    "non_negative_int",
    "positive_int",
    "probability_threshold",
    "torch_device",
]
