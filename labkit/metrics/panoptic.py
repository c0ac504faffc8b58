"""Panoptic quality PQ = SQ x RQ (Kirillov et al. 2019), following the reference ``panopticapi``.

Segments.  Ground truth: each instance of a ``things`` class, and for each
``stuff`` class the pixels of that ``semantic`` class outside thing instances.
Prediction: each predicted instance of a ``things`` class (other classes are
dropped), and for each ``stuff`` class the pixels where the predicted
``semantic`` map has it and no kept instance lies.  Pixels whose ground-truth
``semantic`` is 255 are void and belong to no ground-truth segment.  Pixels of
a class in neither list (e.g. background 0 when it is not declared stuff) are
unlabelled but *not* void: a prediction spilling into them pays for it.

Matching, per image and class: a predicted and a ground-truth segment match
when IoU > 0.5, the union leaving out the predicted segment's void pixels
(unique by construction).  Unmatched ground truths are false negatives;
unmatched predictions are false positives unless more than half of their
pixels are void.  Counts and IoU sums are pooled over the dataset per class;
PQ_c = sum IoU / (TP + FP/2 + FN/2), SQ_c = sum IoU / TP, RQ_c = TP / (TP +
FP/2 + FN/2); PQ, SQ and RQ (overall, things, stuff) average them over the
classes with TP + FP + FN > 0, and are 0.0 where there is no such class.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from labkit.errors import LabkitError
from labkit.metrics.inputs import IGNORE_INDEX, Entry, contingency, read_pairs, safe_divide


def panoptic_quality(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    things: Sequence[int],
    stuff: Sequence[int],
    *,
    per_class: bool = False,
) -> dict[str, Any]:
    """``pq, sq, rq`` overall and ``pq_things ... rq_stuff``; ``per_class`` adds counts per class."""
    things, stuff = [int(c) for c in things], [int(c) for c in stuff]
    if set(things) & set(stuff):
        raise LabkitError(f"classes {sorted(set(things) & set(stuff))} are both thing and stuff")
    stats: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(4))  # tp, fp, fn, iou sum
    for pred, gt in read_pairs(predictions, ground_truths):
        void = gt.semantic == IGNORE_INDEX if gt.semantic is not None else np.zeros(gt.shape, bool)
        gt_index, gt_classes = _segments(gt, gt.semantic, things, stuff, void)
        pred_index, pred_classes = _segments(pred, pred.semantic, things, stuff)
        n_gt = len(gt_classes)
        gt_index = np.where(void, n_gt + 1, gt_index)  # void = one extra column
        table = contingency(pred_index, gt_index, len(pred_classes), n_gt + 1)
        inter, pred_void = table[1:, 1 : n_gt + 1], table[1:, n_gt + 1]
        pred_area, gt_area = table[1:].sum(1), table[:, 1 : n_gt + 1].sum(0)
        union = pred_area[:, None] + gt_area[None, :] - inter - pred_void[:, None]
        iou = safe_divide(inter, union)
        match = (iou > 0.5) & (pred_classes[:, None] == gt_classes[None, :])
        for c in set(gt_classes.tolist()) | set(pred_classes.tolist()):
            row = stats[c]
            is_pred, is_gt = pred_classes == c, gt_classes == c
            hits = match[np.ix_(is_pred, is_gt)]
            mostly_void = pred_void[is_pred] * 2 > pred_area[is_pred]
            row[0] += hits.sum()
            row[1] += (~hits.any(1) & ~mostly_void).sum()
            row[2] += (~hits.any(0)).sum()
            row[3] += iou[np.ix_(is_pred, is_gt)][hits].sum()
    classes = {c: _quality(*stats[c]) for c in things + stuff if stats[c][:3].sum() > 0}
    out: dict[str, Any] = {}
    for suffix, group in (("", things + stuff), ("_things", things), ("_stuff", stuff)):
        rows = [classes[c] for c in group if c in classes]
        for key in ("pq", "sq", "rq"):
            out[key + suffix] = float(np.mean([r[key] for r in rows])) if rows else 0.0
    if per_class:
        out["per_class"] = classes
    return out


def _segments(
    entry: Entry,
    semantic: np.ndarray | None,
    things: list[int],
    stuff: list[int],
    void: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A non-overlapping segment index map (0 = none) and each segment's class.

    Thing segments are ``entry``'s instances of a thing class, stuff segments the
    ``semantic`` pixels of each stuff class outside them; ``void`` pixels belong
    to none, and segments left empty are dropped.
    """
    keep = np.isin(entry.classes, things)
    lut = np.zeros(len(entry) + 1, dtype=np.int64)
    lut[1:][keep] = np.arange(1, keep.sum() + 1)
    index = lut[entry.index]
    if void is not None:
        index[void] = 0
    classes = list(entry.classes[keep])
    if semantic is not None:
        for c in stuff:
            region = (semantic == c) & (index == 0)
            if region.any():
                classes.append(c)
                index[region] = len(classes)
    classes_arr = np.array(classes, dtype=np.int64)
    present = np.bincount(index.reshape(-1), minlength=len(classes_arr) + 1)[1:] > 0
    if present.all():
        return index, classes_arr
    lut = np.zeros(len(classes_arr) + 1, dtype=np.int64)
    lut[1:][present] = np.arange(1, present.sum() + 1)
    return lut[index], classes_arr[present]


def _quality(tp: float, fp: float, fn: float, iou_sum: float) -> dict[str, float]:
    denominator = tp + 0.5 * fp + 0.5 * fn
    return {
        "pq": float(safe_divide(iou_sum, denominator)),
        "sq": float(safe_divide(iou_sum, tp)),
        "rq": float(safe_divide(tp, denominator)),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
    }
