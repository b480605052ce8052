"""Where a small SELF1E's referring masks go wrong: the wrong object, or a poor outline of the right one.

    python benchmarks/error_analysis.py [--model DIR] [--samples 500] [--seed 12345]

On held-out synthetic samples (images of the model's tile size), by expression kind: the mean IoU, the share of the
target's pixels the mask finds (recall), and where the rest of the predicted pixels lie: on other objects (the
sentence was grounded to the wrong object) or on the background (a poor outline). No-target expressions report the
share answered with an empty mask; position expressions are also split by axis (left/right against top/bottom).
Objects are found with `object_pixels`, exactly.
"""

import argparse
from collections import defaultdict

import numpy as np
import torch
from common import table

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.data import SyntheticConfig, make_synthetic_referring_dataset
from transformers_self1e.data.synthetic import COLOR_PALETTE, compared_quantity, object_pixels
from transformers_self1e.demo import SHIPPED_MODEL
from transformers_self1e.evaluation import format_metric


def pixel_shares(prediction: np.ndarray, target: np.ndarray, objects: np.ndarray) -> dict[str, float]:
    """IoU, recall and the shares of predicted pixels on other objects and on the background of one target mask."""
    predicted = max(int(prediction.sum()), 1)
    return {
        "iou": (prediction & target).sum() / (prediction | target).sum(),
        "recall": (prediction & target).sum() / target.sum(),
        "other objects": (prediction & objects & ~target).sum() / predicted,
        "background": (prediction & ~objects).sum() / predicted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=12345, help="held-out seed (training uses 0 and 1)")
    args = parser.parse_args()

    model = Self1EForSegmentation.from_pretrained(args.model).eval()
    processor = Self1EProcessor.from_pretrained(args.model)
    dataset = make_synthetic_referring_dataset(
        args.samples, args.seed, SyntheticConfig(image_size=model.config.tile_size)
    )

    shares: dict[str, list[dict[str, float]]] = defaultdict(list)
    empty_answers = []
    for row in dataset:
        with torch.inference_mode():
            prediction = model.segment(row["image"], row["expression"], processor=processor).masks[0].numpy()
        target = np.asarray(row["mask"]) > 0
        if row["no_target"]:
            empty_answers.append(not prediction.any())
        else:
            result = pixel_shares(prediction, target, object_pixels(row["image"]))
            names_colour = any(word in COLOR_PALETTE for word in row["expression"].split())
            shares[row["expression_kind"]].append(result)
            shares[f"{row['expression_kind']}, {'colour named' if names_colour else 'no colour'}"].append(result)
            if row["expression_kind"] == "position":
                axis = {"x": "left/right", "y": "top/bottom"}[compared_quantity(row["expression"])]
                shares[f"position, {axis}"].append(result)

    print("## Where the referring masks go wrong\n")
    print(f"model `{args.model}`, {args.samples} samples of seed {args.seed}; torch {torch.__version__}\n")
    columns = ["iou", "recall", "other objects", "background"]
    rows = [
        [kind, str(len(values)), *(f"{np.mean([value[column] for value in values]):.3f}" for column in columns)]
        for kind, values in sorted(shares.items())
    ]
    header = ["expression kind", "samples", "IoU", "target pixels found", "predicted on other objects"]
    print(table([*header, "predicted on background"], rows))
    share = format_metric(float(np.mean(empty_answers)) if empty_answers else None, 3)
    print(f"\nno-target expressions answered with an empty mask: {share} of {len(empty_answers)}")


if __name__ == "__main__":
    main()
