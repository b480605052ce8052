"""Evaluation metrics for referring, generalized referring and open-vocabulary semantic segmentation, and the
evaluation of a model over a dataset (`evaluate_referring`, imported on first use)."""

from .metrics import ReferringSegmentationMetrics, SemanticSegmentationMetrics, format_metric, logits_to_mask

_EVALUATE_EXPORTS = (
    "BREAKDOWN_COLUMNS",
    "evaluate_referring",
    "load_evaluation_dataset",
    "referring_targets",
    "write_report",
)


def __getattr__(name: str):
    if name in _EVALUATE_EXPORTS:
        from . import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BREAKDOWN_COLUMNS",
    "ReferringSegmentationMetrics",
    "SemanticSegmentationMetrics",
    "evaluate_referring",
    "format_metric",
    "load_evaluation_dataset",
    "logits_to_mask",
    "referring_targets",
    "write_report",
]
