"""Shared pieces of the benchmarks: model sizes, random inputs, a peak-memory probe, interleaved timing and table
printing."""

import argparse
import ctypes
import platform
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import PIL.Image
import torch

from transformers_self1e import Self1EConfig, Self1EForSegmentation, Self1EProcessor


def mid_config(**overrides) -> Self1EConfig:
    """A random model of a few hundred million parameters with InternVL3's real geometry: 448-px tiles of 14-px
    patches (1024 ViT patches, 256 LLM tokens per tile), a Qwen2.5-0.5B-sized language model cut to 8 layers and
    InternVL3's vocabulary (plus [SEG])."""
    settings = {
        "vision_config": {
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "image_size": 448,
            "patch_size": 14,
            "attention_bias": True,
        },
        "text_config": {
            "model_type": "qwen2",
            "vocab_size": 151675,
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 8,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "rope_theta": 1e6,
        },
        "image_token_id": 151667,
        "seg_token_id": 151674,
        "image_seq_length": 256,
    }
    settings.update(overrides)
    return Self1EConfig(**settings)


def tiny_config(**overrides) -> Self1EConfig:
    """For checking that a benchmark runs (`--config tiny`), not for numbers."""
    from transformers_self1e.presets import tiny_config as preset

    return preset(**overrides)


def internvl3_1b_config(**overrides) -> Self1EConfig:
    """InternVL3-1B's real sizes (InternViT-300M + Qwen2.5-0.5B), random weights."""
    from transformers_self1e.presets import internvl3_1b_config as preset

    return preset(**overrides)


CONFIGS = {"mid": mid_config, "internvl3-1b": internvl3_1b_config, "tiny": tiny_config}


def build_model(config_name: str, device: str, dtype: torch.dtype, **overrides) -> Self1EForSegmentation:
    torch.manual_seed(0)
    model = Self1EForSegmentation(CONFIGS[config_name](**overrides)).eval()
    return model.to(device=device, dtype=dtype)


def build_model_and_processor(
    args: argparse.Namespace, dtype: torch.dtype, max_tiles: int = 1
) -> tuple[Self1EForSegmentation, Self1EProcessor]:
    """The benchmark model of `args.config` and a processor that agrees with it on tile size and special tokens."""
    from processor import benchmark_processor, token_overrides

    geometry = CONFIGS[args.config]()
    processor = benchmark_processor(geometry.tile_size, geometry.image_tokens_per_tile, max_tiles=max_tiles)
    model = build_model(args.config, args.device, dtype, **token_overrides(processor, args.config))
    return model, processor


def parse_common_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="mid")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions per measurement")
    return parser


def resolve_dtype(args: argparse.Namespace) -> torch.dtype:
    if args.dtype:
        return getattr(torch, args.dtype)
    return torch.bfloat16 if args.device.startswith("cuda") else torch.float32


def random_image(height: int, width: int, rng: np.random.Generator) -> PIL.Image.Image:
    """An RGB image of uniformly random pixels drawn from `rng`."""
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


class PeakMemory:
    """Peak memory a call adds on top of what was in use before it: CUDA allocator statistics on GPU, the resident
    set size sampled every millisecond on CPU. On CPU, glibc is told to serve every allocation above 128 KiB with its
    own mapping, returned to the system when freed, so that memory kept from earlier calls does not hide a peak."""

    def __init__(self, device: str):
        self.device = torch.device(device)
        if self.device.type == "cpu":
            return_freed_memory_at_once()

    def measure(self, function: Callable[[], object]) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            function()
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before
        before = resident_bytes()
        peak = before
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, resident_bytes())
                time.sleep(0.001)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            function()
        finally:
            done.set()
            sampler.join()
        return max(peak, resident_bytes()) - before


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def return_freed_memory_at_once() -> None:
    """Tells glibc to serve every allocation above 128 KiB with its own mapping, returned to the system when freed, and
    to return what it holds now: the resident size then follows what is in use."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    libc.malloc_trim(0)


def reset_peak_resident_bytes() -> int:
    """Resets Linux's peak resident size of this process (VmHWM) to the current one, which it returns."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_bytes("VmRSS:")


def peak_resident_bytes() -> int:
    """The peak resident size of this process since it started or since [`reset_peak_resident_bytes`]."""
    return _status_bytes("VmHWM:")


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field))


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, dict[str, float]]:
    """Median seconds and median peak memory of every candidate, measured round-robin after one warm-up each, so
    that drifts of the machine hit all candidates alike."""
    probe = PeakMemory(device)
    times = {name: [] for name in candidates}
    memory = {name: [] for name in candidates}
    for function in candidates.values():
        function()
    for _ in range(repeats):
        for name, function in candidates.items():
            memory[name].append(probe.measure(function))
            _synchronize(device)
            start = time.perf_counter()
            function()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {
        name: {"seconds": statistics.median(times[name]), "peak_bytes": statistics.median(memory[name])}
        for name in candidates
    }


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def header(args: argparse.Namespace, model: Self1EForSegmentation, title: str) -> str:
    parameters = sum(parameter.numel() for parameter in model.parameters())
    weight_bytes = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    return (
        f"## {title}\n\n"
        f"machine: {platform.machine()} {device}, {torch.get_num_threads()} threads; torch {torch.__version__}; "
        f"config `{args.config}` ({parameters / 1e6:.0f}M parameters, {model.config.tile_size}-px tiles, "
        f"{model.config.image_tokens_per_tile} image tokens per tile); dtype {model.dtype}; "
        f"median of {args.repeats} interleaved repetitions; weights {megabytes(weight_bytes)} (peak memory below is "
        f"what a call adds on top of them)\n"
    )


def table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(value: float, baseline: float) -> str:
    """`value` as a multiple of `baseline`, e.g. `1.21x`."""
    return f"{value / baseline:.2f}x"


def comparison_rows(
    label: str, results: dict[str, dict[str, float]], baseline: str, speed: Callable[[dict[str, float]], str]
) -> list[list[str]]:
    """Table rows of [`interleaved`]'s `results`, one per candidate: `label`, the candidate's name, `speed(result)`,
    its time as a multiple of the `baseline` candidate's, its peak memory, and that as a multiple of the baseline's."""
    base = results[baseline]
    return [
        [
            label,
            name,
            speed(result),
            ratio(result["seconds"], base["seconds"]),
            megabytes(result["peak_bytes"]),
            # A call may add no memory at all on top of the weights: at least one byte, not a division by zero.
            ratio(result["peak_bytes"], max(base["peak_bytes"], 1)),
        ]
        for name, result in results.items()
    ]


def megabytes(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"
