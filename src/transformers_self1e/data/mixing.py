"""Mixing the task datasets at the paper's sampling rates (Sec. 4.1, 7)."""

from collections.abc import Mapping

import numpy as np
from datasets import Dataset, concatenate_datasets

# Base SELF1E: one epoch over every sample.
SELF1E_RATES: dict[str, float] = {"vqa": 1.0, "referring": 1.0, "semantic": 1.0, "reasoning": 1.0}
# SELF1E-SEG: segmentation data magnified, VQA kept at 1x (paper Sec. 7).
SELF1E_SEG_RATES: dict[str, float] = {"vqa": 1.0, "referring": 20.0, "semantic": 6.0, "reasoning": 6.0}


def mix_datasets(datasets: Mapping[str, tuple[Dataset, float]], seed: int = 0) -> Dataset:
    """
    One shuffled dataset in which every `datasets[name] = (dataset, rate)` appears `rate` times: `floor(rate)` full
    copies plus a seeded random subset for the fractional part (`rate=0.5` keeps half the rows). The counts are
    exact, and the order depends only on `seed`.

    With the presets: `mix_datasets({task: (data[task], SELF1E_SEG_RATES[task]) for task in data}, seed)`.

    Repeated copies are identical rows, prompts included; for fresh target and prompt draws per repetition, build the
    dataset with several loader seeds and concatenate them instead of using a rate above 1.
    """
    if not datasets:
        raise ValueError("datasets is empty")
    parts = []
    for index, (name, (dataset, rate)) in enumerate(datasets.items()):
        if rate < 0:
            raise ValueError(f"the rate of {name!r} must be non-negative, got {rate}")
        copies, fraction = divmod(rate, 1)
        parts.extend([dataset] * int(copies))
        extra = round(fraction * len(dataset))
        if extra:
            rng = np.random.default_rng([seed, index])
            parts.append(dataset.select(np.sort(rng.choice(len(dataset), size=extra, replace=False))))
    if not parts:
        raise ValueError("every rate rounds to zero rows")
    return concatenate_datasets(parts).shuffle(seed=seed)


__all__ = ["SELF1E_RATES", "SELF1E_SEG_RATES", "mix_datasets"]
