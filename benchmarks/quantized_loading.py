"""Weight memory, time and peak memory of one segment() call with the model loaded in float32, in bfloat16 and with
8-bit and 4-bit weights through transformers' quantization configs: torchao (runs on the CPU) and bitsandbytes (CUDA;
recent versions also run on the CPU). At InternVL3-1B's sizes with random weights by default.

A random model of `--config` is saved once (bfloat16 safetensors, in a temporary folder removed afterwards); every
scheme then runs in a fresh process: `from_pretrained(folder, dtype=..., quantization_config=...)`, one warm-up call,
then `--repeats` calls on a 448-px image with one prompt. The quantized schemes keep
`Self1EForSegmentation.modules_to_not_quantize` (mask head, projector, LM head) and the embeddings in the scheme's
dtype. A scheme whose package is missing is reported as such: `pip install torchao bitsandbytes` to measure it.

    python benchmarks/quantized_loading.py [--config internvl3-1b|mid|tiny] [--device cpu|cuda] [--repeats 3]
"""

import argparse
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import (
    CONFIGS,
    build_model_and_processor,
    megabytes,
    peak_resident_bytes,
    random_image,
    reset_peak_resident_bytes,
    return_freed_memory_at_once,
    table,
)

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.quantization import bitsandbytes_config, torchao_config


@dataclass(frozen=True)
class Scheme:
    dtype: torch.dtype
    package: str | None = None
    # The quantization config, built in the measuring process (which imports `package`).
    quantization_config: Callable[[], object] | None = None


SCHEMES = {
    "float32": Scheme(torch.float32),
    "bfloat16": Scheme(torch.bfloat16),
    "int8 torchao (weight-only)": Scheme(torch.bfloat16, "torchao", lambda: torchao_config("int8")),
    # torchao stores int4 one value per byte on the CPU: its packed int4 layouts need CUDA kernels.
    "int4 torchao (weight-only, groups of 32)": Scheme(torch.bfloat16, "torchao", lambda: torchao_config("int4")),
    "int8 bitsandbytes (LLM.int8)": Scheme(
        torch.bfloat16, "bitsandbytes", lambda: bitsandbytes_config("int8", torch.bfloat16)
    ),
    "nf4 bitsandbytes": Scheme(torch.bfloat16, "bitsandbytes", lambda: bitsandbytes_config("int4", torch.bfloat16)),
}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="internvl3-1b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="measured segment() calls per scheme (median)")
    parser.add_argument("--schemes", nargs="+", choices=sorted(SCHEMES), default=list(SCHEMES), metavar="SCHEME")
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "SCHEME"), help=argparse.SUPPRESS)
    return parser.parse_args()


def save_random_model(args: argparse.Namespace, folder: Path) -> int:
    """Saves a random model of `args.config` and its processor to `folder`; returns its parameter count."""
    model, processor = build_model_and_processor(argparse.Namespace(config=args.config, device="cpu"), torch.float32)
    model.to(torch.bfloat16).save_pretrained(folder)
    processor.save_pretrained(folder)
    return sum(parameter.numel() for parameter in model.parameters())


def stored_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the model's parameters and buffers, looking inside torchao's tensor subclasses and counting the
    scales bitsandbytes keeps beside its data (`get_memory_footprint()` counts torchao weights at their outer dtype)."""
    storages = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        for data in _data_tensors(tensor):
            storage = data.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _data_tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor) and hasattr(value, "__tensor_flatten__"):
        names, _ = value.__tensor_flatten__()
        for name in names:
            yield from _data_tensors(getattr(value, name))
        return
    if isinstance(value, torch.Tensor):
        yield value
    # bitsandbytes: `Int8Params.SCB`, `Params4bit.quant_state` (absmax, and `state2` when nested).
    for attribute in getattr(value, "__dict__", {}).values():
        if isinstance(attribute, torch.Tensor) or type(attribute).__name__ == "QuantState":
            yield from _data_tensors(attribute)


def measure(folder: Path, name: str, device: str, repeats: int) -> dict:
    """Loads the model of `folder` as `name` says, then times `segment()` and measures the memory one call adds."""
    scheme = SCHEMES[name]
    quantization = scheme.quantization_config() if scheme.quantization_config else None
    on_cuda = device.startswith("cuda")
    resident_before_loading = reset_peak_resident_bytes()
    start = time.perf_counter()
    model = Self1EForSegmentation.from_pretrained(
        folder, dtype=scheme.dtype, quantization_config=quantization, device_map=device
    ).eval()
    result = {"load_seconds": time.perf_counter() - start, "stored": stored_bytes(model)}
    if not on_cuda:
        result["load_peak"] = peak_resident_bytes() - resident_before_loading
    processor = Self1EProcessor.from_pretrained(folder)
    image = random_image(448, 448, np.random.default_rng(448))

    def segment() -> None:
        model.segment(image, "the red circle on the left", processor=processor)
        if on_cuda:
            torch.cuda.synchronize()

    segment()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        segment()
        seconds.append(time.perf_counter() - start)
    result["seconds"] = statistics.median(seconds)
    # Measured after the timing: returning freed memory at once costs page faults that would slow the calls down.
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        segment()
        result["added"] = torch.cuda.max_memory_allocated() - before
    else:
        return_freed_memory_at_once()
        before = reset_peak_resident_bytes()
        segment()
        result["added"] = peak_resident_bytes() - before
    return result


def run_in_fresh_process(folder: Path, name: str, args: argparse.Namespace) -> dict:
    scheme = SCHEMES[name]
    if scheme.package and importlib.util.find_spec(scheme.package) is None:
        return {"error": f"{scheme.package} is not installed"}
    command = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats)]
    completed = subprocess.run([*command, "--measure", str(folder), name], check=False, capture_output=True, text=True)
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"failed: {last_line[:160]}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def package_versions() -> str:
    versions = []
    for package in ("torch", "transformers", "torchao", "bitsandbytes"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return ", ".join(versions)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_arguments()
    if args.measure:
        folder, name = args.measure
        print(json.dumps(measure(Path(folder), name, args.device, args.repeats)))
        return

    with tempfile.TemporaryDirectory(prefix="self1e-quantized-loading-") as folder:
        parameters = save_random_model(args, Path(folder))
        results = {name: run_in_fresh_process(Path(folder), name, args) for name in args.schemes}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"## Quantized loading\n\nmachine: {platform.machine()} {device}, {torch.get_num_threads()} threads; "
        f"{package_versions()}; config `{args.config}` ({parameters / 1e6:.0f}M parameters, random weights); one "
        f"448-px image, one prompt; median of {args.repeats} calls after a warm-up; one fresh process per scheme. "
        "Weights: the bytes the parameters and buffers hold (quantized data and scales). Loading peak: the peak "
        "resident size loading adds (CPU; a checkpoint in the dtype loaded stays memory-mapped, its pages counted once "
        "read). Added: the peak memory one call adds on top of what was in use (resident size on the CPU, allocated "
        "memory on CUDA)\n"
    )
    columns = ["scheme", "weights", "loading peak", "loading time", "segment()", "added by the call"]
    rows = []
    for name, result in results.items():
        if "error" in result:
            rows.append([name, result["error"], *[""] * (len(columns) - 2)])
            continue
        rows.append(
            [
                name,
                megabytes(result["stored"]),
                megabytes(result["load_peak"]) if "load_peak" in result else "-",
                f"{result['load_seconds']:.1f} s",
                f"{result['seconds'] * 1000:.0f} ms",
                megabytes(result["added"]),
            ]
        )
    print(table(columns, rows))


if __name__ == "__main__":
    main()
