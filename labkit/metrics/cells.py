"""Scores for class-agnostic instance maps: matching accuracy and the adjusted Rand index.

``matching_accuracy`` is the cell-segmentation score of the 2018 Data Science
Bowl and StarDist (Schmidt et al. 2018): predicted and ground-truth objects are
paired one-to-one so as to maximise the number of pairs with IoU >= threshold
(Hungarian matching, as in StarDist's ``matching``; for thresholds >= 0.5 the
pairs are unique anyway), and the score is TP / (TP + FP + FN) with the counts
pooled over all images.

``adjusted_rand_index`` is Hubert & Arabie's ARI of the two pixel partitions,
background (id 0) counting as one more cluster, averaged over images.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from labkit.errors import DataError
from labkit.metrics.inputs import Entry, contingency, index_map, present_ids, safe_divide, to_numpy

MapLike = Any  # an [H,W] array/tensor, a prediction dict, or a sequence of either


def matching_accuracy(pred_instances: MapLike, gt_instances: MapLike, iou: float = 0.5) -> float:
    """TP / (TP + FP + FN) at IoU >= ``iou``, over one map pair or a sequence of them.

    0.0 when there is nothing on either side (no objects predicted or present).
    """
    tp = fp = fn = 0
    for pred, gt in _map_pairs(pred_instances, gt_instances):
        table = _table(pred, gt)
        inter = table[1:, 1:]
        union = table[1:].sum(1)[:, None] + table[:, 1:].sum(0)[None, :] - inter
        scores = safe_divide(inter, union)
        n_pred, n_gt = scores.shape
        matched = 0
        if n_pred and n_gt:
            ok = scores >= iou
            # maximise the number of pairs above threshold, then their total IoU
            cost = -(ok + scores / (2 * max(n_pred, n_gt)))
            rows, cols = linear_sum_assignment(cost)
            matched = int(ok[rows, cols].sum())
        tp, fp, fn = tp + matched, fp + n_pred - matched, fn + n_gt - matched
    return float(safe_divide(tp, tp + fp + fn))


def adjusted_rand_index(pred_instances: MapLike, gt_instances: MapLike) -> float:
    """Mean over images of the ARI between the pixel partitions (background included).

    1.0 when both partitions are the same trivial one (one cluster, or all
    singletons), following scikit-learn; 0.0 for an empty sequence.
    """
    values = []
    for pred, gt in _map_pairs(pred_instances, gt_instances):
        table = _table(pred, gt).astype(np.float64)
        n = table.sum()
        index = _pairs(table)
        rows, cols, total = _pairs(table.sum(1)), _pairs(table.sum(0)), n * (n - 1) / 2
        expected = rows * cols / total if total else 0.0
        maximum = (rows + cols) / 2
        values.append(1.0 if maximum == expected else (index - expected) / (maximum - expected))
    return float(np.mean(values)) if values else 0.0


def _pairs(counts: np.ndarray) -> float:
    """Sum of ``count choose 2``."""
    return float(np.sum(counts * (counts - 1)) / 2)


def _map_pairs(pred: MapLike, gt: MapLike) -> list[tuple[np.ndarray, np.ndarray]]:
    preds, gts = _maps(pred), _maps(gt)
    if len(preds) != len(gts):
        raise DataError(f"{len(preds)} predicted maps for {len(gts)} ground-truth maps")
    for i, (p, g) in enumerate(zip(preds, gts)):
        if p.shape != g.shape:
            raise DataError(f"image {i}: predicted map {p.shape} != ground-truth map {g.shape}")
    return list(zip(preds, gts))


def _maps(x: MapLike) -> list[np.ndarray]:
    """A list of 2-D int maps from one map, one dict or :class:`Entry`, or a sequence of these."""
    if isinstance(x, Entry):
        return [x.index]
    if isinstance(x, Mapping):
        x = x["instances"]
    if hasattr(x, "ndim") and x.ndim == 2:
        return [to_numpy(x).astype(np.int64)]
    if hasattr(x, "ndim") and x.ndim == 3:
        return [to_numpy(m).astype(np.int64) for m in x]
    if isinstance(x, Sequence):
        return [m for item in x for m in _maps(item)]
    raise DataError(f"expected an [H,W] instance map or a sequence of them, got {type(x).__name__}")


def _table(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Contingency table of the two maps; row/column 0 is background."""
    ids_p, ids_g = present_ids(pred), present_ids(gt)
    return contingency(index_map(pred, ids_p), index_map(gt, ids_g), len(ids_p), len(ids_g))
