"""The paper's ablations in miniature (Tables 5 and 7): the small synthetic SELF1E trained with each image-feature
path and each segmentation attention, one budget and one seed set, gIoU on thin and small targets apart from the rest.

    python benchmarks/ablations.py [--max-steps 800] [--eval-samples 300] [--jobs 2] [--out outputs/ablations]
        [-- any other flag of examples/finetune_synthetic.py]

Every run is `examples/finetune_synthetic.py` with its defaults (the shipped model's sizes and data) and the same
`--seed`; only the variant flags differ. The full model (RFR + RFA, image tokens bidirectional and seeing [SEG]) is
trained once and appears in both tables. Held-out samples come from `--eval-seed`, which training never uses. Both
tables end with the text-blind answer (every object of the image) on the same samples: a run that has not learnt to
read the sentence scores near it.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import table

from transformers_self1e.data import SyntheticConfig, make_synthetic_referring_dataset, make_synthetic_scene_dataset
from transformers_self1e.evaluation import format_metric
from transformers_self1e.evaluation.evaluate import evaluate_text_blind

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_synthetic.py"
FULL = ("residual_amplifier", "bidirectional_image_with_seg")
FEATURE_PATHS = {
    "llm_low_res": "LLM image features (low-res)",
    "high_res": "HR features (self-replicated ViT)",
    "residual_refill": "RFR",
    "residual_amplifier": "RFR + RFA",
}
ATTENTIONS = {
    "causal": "causal",
    "bidirectional_image": "image tokens bidirectional",
    "bidirectional_image_with_seg": "+ image tokens see [SEG]",
}
SIZE_CLASSES = ("thin", "small", "regular")


def training_data(args: argparse.Namespace) -> Path:
    """The training scenes (3 expressions each, as the shipped recipe), generated once for all variants."""
    path = Path(args.out) / f"train-seed{args.seed}-{args.num_samples}"
    if not path.is_dir():
        config = SyntheticConfig(image_size=args.image_size)
        make_synthetic_scene_dataset(args.num_samples, args.seed, 3, config).save_to_disk(str(path))
    return path


def train_and_evaluate(
    feature_path: str, attention: str, train_data: Path, args: argparse.Namespace, passthrough: list[str]
) -> dict:
    out = Path(args.out) / f"{feature_path}--{attention}"
    report_path = out / "eval.json"
    if not report_path.is_file() or args.retrain:
        command = [sys.executable, str(EXAMPLE), "--out", str(out), "--max-steps", str(args.max_steps)]
        command += ["--seed", str(args.seed), "--eval-seed", str(args.eval_seed), "--train-dataset", str(train_data)]
        command += ["--eval-samples", str(args.eval_samples), "--logging-steps", str(args.max_steps // 4 or 1)]
        command += ["--image-feature-path", feature_path, "--segmentation-attention", attention, *passthrough]
        start = time.perf_counter()
        env = os.environ | {"OMP_NUM_THREADS": str(args.threads_per_job)}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (out / "wall_time_s.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return json.loads(report_path.read_text())


def text_blind_report(args: argparse.Namespace) -> dict:
    """The text-blind answer on the held-out samples the runs are scored on."""
    config = SyntheticConfig(image_size=args.image_size)
    return evaluate_text_blind(make_synthetic_referring_dataset(args.eval_samples, args.eval_seed, config))


def row(name: str, report: dict) -> list[str]:
    metrics = report["metrics"]
    by_size = report["breakdown"].get("target_size_class", {})
    sizes = [format_metric(by_size[size]["giou"], 3) if size in by_size else "-" for size in SIZE_CLASSES]
    scores = [format_metric(metrics[key], 3) for key in ("giou", "ciou")]
    return [name, *scores, *sizes, format_metric(metrics["n_acc"], 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=800, help="training steps of every variant (default 800)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every variant (default 0)")
    parser.add_argument("--eval-seed", type=int, default=4321, help="held-out seed (default 4321)")
    parser.add_argument("--eval-samples", type=int, default=300, help="held-out samples (default 300)")
    parser.add_argument("--num-samples", type=int, default=20000, help="training scenes, shared (default 20000)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the images (the default tile size)")
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at once (default 2)")
    parser.add_argument("--threads-per-job", type=int, default=1, help="torch threads of each run (default 1)")
    parser.add_argument("--out", default="outputs/ablations", help="one folder per variant; finished ones are reused")
    parser.add_argument("--retrain", action="store_true", help="train variants again even when their folder exists")
    args, passthrough = parser.parse_known_args()
    passthrough = [flag for flag in passthrough if flag != "--"]

    header = ["variant", "gIoU", "cIoU", "gIoU thin", "gIoU small", "gIoU regular", "N-acc"]
    print(f"## Ablations in miniature: {args.max_steps} steps, training seed {args.seed}, ", end="")
    print(f"{args.eval_samples} held-out samples of seed {args.eval_seed}\n")
    train_data = training_data(args)
    variants = [(path, FULL[1]) for path in FEATURE_PATHS] + [(FULL[0], attention) for attention in ATTENTIONS]
    variants = list(dict.fromkeys(variants))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            variant: pool.submit(train_and_evaluate, *variant, train_data, args, passthrough) for variant in variants
        }
        reports = {variant: future.result() for variant, future in futures.items()}
    text_blind = row("text-blind answer (every object)", text_blind_report(args))
    print("Image features (paper Table 5), attention as in the full model:\n")
    feature_rows = [row(name, reports[(path, FULL[1])]) for path, name in FEATURE_PATHS.items()]
    print(table(header, [*feature_rows, text_blind]) + "\n")
    print("Segmentation attention (paper Table 7), features RFR + RFA:\n")
    attention_rows = [row(name, reports[(FULL[0], attention)]) for attention, name in ATTENTIONS.items()]
    print(table(header, [*attention_rows, text_blind]))


if __name__ == "__main__":
    main()
