"""Quality of the shipped small SELF1E on held-out synthetic samples, against the bars of the release.

    python benchmarks/synthetic_quality.py [--model DIR] [--samples 500] [--seed 12345] [--card-results results.json]

The samples come from `--seed`, which training never used (training draws seed 0, its own evaluation seed 1); the
images have the model's tile size, as in training. Prints the metrics with their bars, then gIoU/cIoU by target size
and by expression kind; exits 1 when a bar is missed. Two references sit beside the model: the text-blind answer (every
object) and the ground truth itself read through the model's grid of mask logits (what that resolution leaves of
1-3 px bars). `--card-results` also writes the metrics in the list format that
`python -m hub_upload export --results` puts on the model card.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from common import table

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.data import SyntheticConfig, make_synthetic_referring_dataset
from transformers_self1e.demo import SHIPPED_MODEL
from transformers_self1e.evaluation import format_metric
from transformers_self1e.evaluation.evaluate import evaluate_mask_grid, evaluate_referring, evaluate_text_blind

BARS = {"giou": 0.85, "ciou": 0.85, "n_acc": 0.90}


def breakdown_rows(breakdown: dict, grid_breakdown: dict) -> list[list[str]]:
    rows = []
    for column, values in breakdown.items():
        for value, metrics in values.items():
            reference = grid_breakdown[column][value]["giou"]
            row = [
                f"{column}={value}",
                str(metrics["num_samples"]),
                format_metric(metrics["giou"], 3),
                format_metric(metrics["ciou"], 3),
            ]
            rows.append([*row, format_metric(reference, 3)])
    return rows


def card_results(metrics: dict, samples: int, seed: int) -> list[dict]:
    dataset = f"synthetic shapes, {samples} held-out samples (seed {seed})"
    names = {"giou": "gIoU", "ciou": "cIoU", "n_acc": "N-acc"}
    return [
        {"dataset": dataset, "split": "test", "metric": names[key], "value": round(metrics[key], 4)} for key in BARS
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=12345, help="held-out seed (training uses 0 and 1)")
    parser.add_argument("--card-results", help="also write the metrics for the model card to this JSON file")
    args = parser.parse_args()

    model = Self1EForSegmentation.from_pretrained(args.model).eval()
    processor = Self1EProcessor.from_pretrained(args.model)
    config = SyntheticConfig(image_size=model.config.tile_size)
    dataset = make_synthetic_referring_dataset(args.samples, args.seed, config)
    report = evaluate_referring(model, processor, dataset)
    metrics = report["metrics"]

    print("## Shipped small SELF1E on held-out synthetic shapes\n")
    print(f"model `{args.model}`, {args.samples} samples of seed {args.seed}, {config.width_height[0]}-px images; ")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {report['wall_time_s']:.1f} s\n")
    passed = {key: metrics[key] >= bar for key, bar in BARS.items()}
    grid_size = model.config.mask_grid_size
    blind, grid = evaluate_text_blind(dataset), evaluate_mask_grid(dataset, grid_size)
    rows = [
        [key, format_metric(metrics[key], 3), f">= {bar:.2f}", "pass" if passed[key] else "FAIL"]
        + [format_metric(reference["metrics"][key], 3) for reference in (blind, grid)]
        for key, bar in BARS.items()
    ]
    grid_header = f"ground truth through the {grid_size}x{grid_size} mask grid"
    print(table(["metric", "model", "bar", "", "text-blind (every object)", grid_header], rows))
    print()
    headers = [
        "subset",
        "samples",
        "gIoU",
        "cIoU",
        f"gIoU of the ground truth through the {grid_size}x{grid_size} grid",
    ]
    print(table(headers, breakdown_rows(report["breakdown"], grid["breakdown"])))
    if args.card_results:
        Path(args.card_results).write_text(json.dumps(card_results(metrics, args.samples, args.seed), indent=2) + "\n")
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
