"""Train a small SELF1E from scratch on the synthetic shapes data on this CPU (`examples/finetune_synthetic.py`) and
report its held-out quality next to the wall time and the peak memory of the training process.

    python benchmarks/train_synthetic.py [--max-steps 600] [-- any other flag of finetune_synthetic.py]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import table

from transformers_self1e.evaluation import format_metric

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_synthetic.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--out", help="keep the trained model here (default: a temporary folder)")
    args, passthrough = parser.parse_known_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="self1e-synthetic-"))
    command = [sys.executable, str(EXAMPLE), "--out", str(out), "--max-steps", str(args.max_steps), *passthrough]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    report = json.loads((out / "eval.json").read_text())
    metrics = report["metrics"]
    print("## Training a small SELF1E from scratch on synthetic shapes\n")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; command: `{' '.join(command[1:])}`\n")
    rows = [
        [
            str(args.max_steps),
            format_metric(metrics["giou"], 3),
            format_metric(metrics["ciou"], 3),
            format_metric(metrics.get("n_acc"), 3),
            str(metrics["num_samples"]),
            f"{wall / 60:.1f} min",
            f"{peak / 2**30:.2f} GiB",
        ]
    ]
    print(table(["steps", "gIoU", "cIoU", "N-acc", "held-out samples", "wall time", "peak memory"], rows))
    print(f"\nbreakdown: {json.dumps(report.get('breakdown', {}))}")


if __name__ == "__main__":
    main()
