"""Peak memory of converting a reference-layout checkpoint, against the checkpoint's size.

Builds a synthetic checkpoint of about 1 GB in the SELF1E reference layout (random weights under the names and shapes
of the authors' modules: an InternVL3-1B-wide model with fewer layers), stored as one file and as several shards,
converts each in a fresh subprocess with `write_converted_folder`, and prints that process's peak resident set size
next to the peak of a subprocess that only imports the same modules.

The peak is the child's `VmHWM` (`/proc/self/status`), not `getrusage(...).ru_maxrss`: Linux keeps `ru_maxrss` across
`execve`, so a child forked from this process (which holds the random weights while writing them) would report this
process's size instead of its own. Linux only.

    python benchmarks/convert_memory.py [--shards 1 4 8] [--dtype bfloat16]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from transformers_self1e.convert.reference_layout import reference_checkpoint_shapes
from transformers_self1e.presets import internvl3_1b_config

# InternVL3-1B widths (InternViT-300M, Qwen2.5-0.5B with its 151k vocabulary, untied LM head), 8 + 10 layers:
# about 0.54 B parameters, 1.07 GB in bfloat16.
CONFIG_OVERRIDES = {"vision_config": {"num_hidden_layers": 8}, "text_config": {"num_hidden_layers": 10}}
IMPORTS = (
    "import re, sys\n"
    "from transformers_self1e.convert.folder_writer import write_converted_folder\n"
    "from transformers_self1e.convert.checkpoint_files import checkpoint_shards\n"
    "from transformers_self1e.convert.reference import convert_reference_tensor\n"
    "from transformers_self1e.presets import internvl3_1b_config\n"
)
CONVERT = IMPORTS + (
    f"config = internvl3_1b_config(**{CONFIG_OVERRIDES!r})\n"
    "write_converted_folder(checkpoint_shards(sys.argv[1]), convert_reference_tensor, config, sys.argv[2])\n"
)
REPORT_PEAK = "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1])\n"


def write_checkpoint(folder: Path, shards: int, dtype: torch.dtype, seed: int = 0) -> list[int]:
    """Random reference-layout weights in `shards` files of similar size (plus an index when sharded); returns the
    size of each file."""
    shapes = reference_checkpoint_shapes(internvl3_1b_config(**CONFIG_OVERRIDES))
    item_size = torch.empty((), dtype=dtype).element_size()
    total = sum(torch.Size(shape).numel() for shape in shapes.values()) * item_size
    generator = torch.Generator().manual_seed(seed)
    groups: list[list[str]] = [[] for _ in range(shards)]
    filled = 0
    for name, shape in shapes.items():
        groups[min(shards - 1, filled * shards // total)].append(name)
        filled += torch.Size(shape).numel() * item_size
    folder.mkdir(parents=True)
    file_names = (
        ["model.safetensors"]
        if shards == 1
        else [f"model-{index:05d}-of-{shards:05d}.safetensors" for index in range(1, shards + 1)]
    )
    weight_map = {}
    for names, file_name in zip(groups, file_names):
        tensors = {name: (torch.randn(shapes[name], generator=generator) * 0.02).to(dtype) for name in names}
        save_file(tensors, folder / file_name)
        weight_map.update(dict.fromkeys(names, file_name))
        del tensors
    if shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return [(folder / name).stat().st_size for name in file_names]


def peak_rss_of_child(code: str, *args: str) -> tuple[int, float]:
    """Runs `python -c code args` in a fresh interpreter; returns its peak RSS in bytes and the time taken."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code + REPORT_PEAK, *args], check=True, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    return int(result.stdout.split()[-1]) * 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 4, 8], help="shard counts to measure")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    baseline, _ = peak_rss_of_child(IMPORTS)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for shards in args.shards:
            source = Path(workdir) / f"checkpoint-{shards}"
            sizes = write_checkpoint(source, shards, dtype)
            peak, elapsed = peak_rss_of_child(CONVERT, str(source), str(Path(workdir) / f"converted-{shards}"))
            rows.append((shards, sum(sizes), max(sizes), peak, elapsed))

    gb = 1e9
    print(f"synthetic reference checkpoint, {args.dtype}; baseline (imports only): peak RSS {baseline / gb:.2f} GB")
    print("| files | checkpoint | largest file | peak RSS | peak RSS - baseline | time |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for shards, total, largest, peak, elapsed in rows:
        print(
            f"| {shards} | {total / gb:.2f} GB | {largest / gb:.2f} GB | {peak / gb:.2f} GB | "
            f"{(peak - baseline) / gb:.2f} GB | {elapsed:.1f} s |"
        )


if __name__ == "__main__":
    main()
