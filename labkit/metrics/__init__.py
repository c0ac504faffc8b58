"""Evaluation metrics: pure functions on predictions and ground truths (DESIGN.md, "Metrics contract").

Predictions and ground truths are lists, one dict per image, of the form in
DESIGN.md's data contract (``instances``, ``ids``, ``classes``, ``scores``,
optional ``semantic``); numpy arrays and torch tensors are both accepted, and
so are :class:`labkit.metrics.inputs.Entry` objects already read by
:func:`labkit.metrics.inputs.read_pairs` (to read the data once for many metrics).
Every metric is on a 0–1 scale, unchanged when instance ids are permuted, and
returns 0.0 (never NaN, never a warning) where there is nothing to score.
"""
from labkit.metrics.cells import adjusted_rand_index, matching_accuracy
from labkit.metrics.coco import coco_mask_ap
from labkit.metrics.panoptic import panoptic_quality
from labkit.metrics.recall import average_recall
from labkit.metrics.semantic import mean_iou
from labkit.metrics.voc import precision_recall_curve, voc_ap_r

__all__ = [
    "adjusted_rand_index",
    "average_recall",
    "coco_mask_ap",
    "matching_accuracy",
    "mean_iou",
    "panoptic_quality",
    "precision_recall_curve",
    "voc_ap_r",
]
