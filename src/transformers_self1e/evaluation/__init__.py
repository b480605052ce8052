"""Evaluation metrics for referring, generalized referring and open-vocabulary semantic segmentation."""

from .metrics import ReferringSegmentationMetrics, SemanticSegmentationMetrics, logits_to_mask

__all__ = ["ReferringSegmentationMetrics", "SemanticSegmentationMetrics", "logits_to_mask"]
