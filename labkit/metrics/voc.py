"""VOC-style region average precision AP^r (Hariharan et al. 2014), as DVIS and Kong & Fowlkes report it.

For each class, the detections of all images are ranked by score; a detection
is a true positive when the ground truth of its class it overlaps most (in its
image) has IoU >= T and was not already taken by a higher-scoring detection,
otherwise a false positive (Kong & Fowlkes 2018, Sec. 5.4: "unless a
ground-truth instance has already been detected by a higher scoring proposal
in which case it is a false positive").  AP is the area under the
precision-recall curve with VOC's all-point interpolation (precision made
monotone, summed over the recall steps), computed per class and averaged over
the classes that have ground truth.  DVIS (Sec. 5) reports T = 0.5 ... 0.9 and
their mean.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from labkit.metrics.inputs import overlaps, ranked, read_pairs

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def voc_ap_r(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float] = THRESHOLDS,
    *,
    class_agnostic: bool = False,
    per_class: bool = False,
) -> dict[str, Any]:
    """``ap_r@T`` for each threshold (key ``f"ap_r@{T:g}"``) and their mean ``ap_r_mean``.

    ``class_agnostic`` scores every instance as one class.  With ``per_class``
    the same keys per class id are returned under ``per_class``.  Classes
    without ground truth are left out of the mean; with no ground truth at all
    every value is 0.0.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    by_class = {c: [all_point_ap(row, n) for row in tp]
                for c, (tp, n) in ranked_hits(predictions, ground_truths, thresholds, class_agnostic).items()}
    values = np.array(list(by_class.values())).reshape(len(by_class), len(thresholds))
    out: dict[str, Any] = _keyed(values.mean(0) if len(by_class) else np.zeros(len(thresholds)), thresholds)
    if per_class:
        out["per_class"] = {c: _keyed(np.array(v), thresholds) for c, v in by_class.items()}
    return out


def ranked_hits(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float] | np.ndarray = THRESHOLDS,
    class_agnostic: bool = False,
) -> dict[int, tuple[np.ndarray, int]]:
    """For each class with ground truth: the hit flags ``[T, D]`` of its detections, all images ranked by
    descending score together, and its number of ground truths."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    flags: dict[int, list[np.ndarray]] = defaultdict(list)  # class -> [T, D] true-positive flags
    scores: dict[int, list[np.ndarray]] = defaultdict(list)
    n_gt: dict[int, int] = defaultdict(int)
    for pred, gt in read_pairs(predictions, ground_truths):
        pred_classes = np.ones_like(pred.classes) if class_agnostic else pred.classes
        gt_classes = np.ones_like(gt.classes) if class_agnostic else gt.classes
        iou = overlaps(pred, gt)
        for c in np.unique(gt_classes).tolist():
            n_gt[c] += int((gt_classes == c).sum())
        for c in np.unique(pred_classes).tolist():
            rows = np.flatnonzero(pred_classes == c)
            rows = rows[ranked(pred.scores[rows])]
            flags[c].append(greedy_matches(iou[np.ix_(rows, gt_classes == c)], thresholds))
            scores[c].append(pred.scores[rows])
    out = {}
    for c in sorted(n_gt):
        if c in flags:
            out[c] = (np.concatenate(flags[c], axis=1)[:, ranked(np.concatenate(scores[c]))], n_gt[c])
        else:
            out[c] = (np.zeros((len(thresholds), 0), dtype=bool), n_gt[c])
    return out


def precision_recall_curve(
    predictions: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]], iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Class-agnostic ``(precision, recall)`` after each detection, all images ranked by descending score
    together, with :func:`voc_ap_r`'s matching at ``iou`` (the curve whose area is its class-agnostic AP^r)."""
    hits = ranked_hits(predictions, ground_truths, (iou,), class_agnostic=True)
    if not hits:
        return np.zeros(0), np.zeros(0)
    tp, n_gt = hits[1]
    found = np.cumsum(tp[0])
    return found / np.arange(1, len(found) + 1), found / n_gt


def greedy_matches(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """True-positive flags ``[T, D]`` of detections (rows, by descending score) against ground truths.

    Each detection looks only at the ground truth it overlaps most; it is a
    hit when that IoU >= T and the ground truth is still free (VOC rule).
    """
    n_det, n_gt = iou.shape
    hits = np.zeros((len(thresholds), n_det), dtype=bool)
    if n_gt == 0:
        return hits
    best = iou.argmax(1)
    best_iou = iou[np.arange(n_det), best]
    for t, threshold in enumerate(thresholds):
        taken = np.zeros(n_gt, dtype=bool)
        for d in np.flatnonzero(best_iou >= threshold):
            if not taken[best[d]]:
                taken[best[d]] = hits[t, d] = True
    return hits


def all_point_ap(tp: np.ndarray, n_gt: int) -> float:
    """VOC 2010+ all-point interpolated AP from hit flags sorted by descending score."""
    if n_gt == 0:
        return 0.0
    hits = np.cumsum(tp)
    recall = np.concatenate([[0.0], hits / n_gt, [1.0]])
    precision = np.concatenate([[0.0], hits / np.arange(1, len(tp) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _keyed(values: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    out = {f"ap_r@{t:g}": float(v) for t, v in zip(thresholds, values)}
    out["ap_r_mean"] = float(np.mean(values)) if len(values) else 0.0
    return out
