"""Training and evaluation data for SELF1E."""

from .synthetic import (
    COLOR_PALETTE,
    SyntheticConfig,
    generate_referring_sample,
    make_synthetic_referring_dataset,
    synthetic_dataset_features,
)

__all__ = [
    "COLOR_PALETTE",
    "SyntheticConfig",
    "generate_referring_sample",
    "make_synthetic_referring_dataset",
    "synthetic_dataset_features",
]
