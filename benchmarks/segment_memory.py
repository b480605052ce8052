"""Peak memory and time of one segment() call with 1, 30 and 300 prompts on a 1024- and a 2048-px image. The masks are
resized, thresholded and scored in chunks of `Self1EPredictor(max_postprocess_bytes=...)` and kept at one bit per
pixel, so the peak should not follow prompts x pixels. Every measurement runs in a fresh process: the shipped model
(or a random `--config`) is loaded, one small call warms it up, then Linux's peak resident size (VmHWM) is reset and
the call measured.

    python benchmarks/segment_memory.py [--model PATH | --config tiny] [--classes] [--sizes 1024 2048]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from common import (
    CONFIGS,
    build_model_and_processor,
    megabytes,
    peak_resident_bytes,
    random_image,
    reset_peak_resident_bytes,
    table,
)

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.modeling.mask_postprocessing import DEFAULT_MAX_CHUNK_BYTES
from transformers_self1e.modeling.predictor import DEFAULT_MAX_BATCH_TOKENS, Self1EPredictor

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "src/transformers_self1e/assets/self1e-tiny-synthetic"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="a saved model folder (default: shipped)")
    parser.add_argument("--config", choices=sorted(CONFIGS), help="a random model of this size instead of --model")
    parser.add_argument("--classes", action="store_true", help="segment(classes=...) instead of prompts")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="square image sides in pixels")
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 30, 300], help="numbers of prompts")
    parser.add_argument("--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS)
    parser.add_argument("--max-postprocess-bytes", type=int, default=DEFAULT_MAX_CHUNK_BYTES)
    parser.add_argument("--measure", type=int, nargs=2, metavar=("SIDE", "PROMPTS"), help=argparse.SUPPRESS)
    return parser.parse_args()


def load_segment(args: argparse.Namespace) -> Callable[[PIL.Image.Image, list[str]], object]:
    """`segment(image, names)` of the benchmarked predictor, asking `names` as prompts or as classes."""
    if args.config:
        args.device = "cpu"
        model, processor = build_model_and_processor(args, torch.float32)
    else:
        model = Self1EForSegmentation.from_pretrained(args.model).eval()
        processor = Self1EProcessor.from_pretrained(args.model)
    predictor = Self1EPredictor(
        model, processor, max_batch_tokens=args.max_batch_tokens, max_postprocess_bytes=args.max_postprocess_bytes
    )
    if args.classes:
        return lambda image, names: predictor.segment(image, classes=names)
    return predictor.segment


def prompt_names(count: int) -> list[str]:
    return [f"the red circle number {index}" for index in range(count)]


def measure(segment: Callable[[PIL.Image.Image, list[str]], object], side: int, num_prompts: int) -> dict:
    """Runs `segment` once on a small image, then measures it on a `side`-px one with `num_prompts` prompts."""
    segment(random_image(64, 64, np.random.default_rng(64)), prompt_names(1))
    image = random_image(side, side, np.random.default_rng(side))
    before = reset_peak_resident_bytes()
    start = time.perf_counter()
    segment(image, prompt_names(num_prompts))
    seconds = time.perf_counter() - start
    peak = peak_resident_bytes()
    return {"side": side, "prompts": num_prompts, "peak": peak, "added": peak - before, "seconds": seconds}


def run_in_fresh_process(side: int, num_prompts: int) -> dict:
    command = [sys.executable, __file__, *sys.argv[1:], "--measure", str(side), str(num_prompts)]
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    if completed.returncode != 0:
        return {"side": side, "prompts": num_prompts, "error": completed.stderr.strip().splitlines()[-1]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_arguments()
    if args.measure:
        print(json.dumps(measure(load_segment(args), *args.measure)))
        return

    print(
        f"## segment() memory with many {'classes' if args.classes else 'prompts'}\n\n"
        f"machine: {platform.machine()} {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads; torch "
        f"{torch.__version__}; model `{args.config or args.model.name}`; max_batch_tokens {args.max_batch_tokens}, "
        f"max_postprocess_bytes {megabytes(args.max_postprocess_bytes)}; one fresh process per row; peak RSS is the "
        "process's peak resident size, added is that peak minus the resident size just before the call\n"
    )
    rows = []
    for side in args.sizes:
        for num_prompts in args.prompts:
            result = run_in_fresh_process(side, num_prompts)
            if "error" in result:
                rows.append([f"{side} px", str(num_prompts), "failed", result["error"], "", ""])
                continue
            packed = num_prompts * side * side / 8
            rows.append(
                [
                    f"{side} px",
                    str(num_prompts),
                    megabytes(result["peak"]),
                    megabytes(result["added"]),
                    megabytes(packed),
                    f"{result['seconds']:.1f} s",
                ]
            )
    print(table(["image", "prompts", "peak RSS", "added by the call", "packed masks", "time"], rows))


if __name__ == "__main__":
    main()
