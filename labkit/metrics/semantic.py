"""Semantic segmentation scores: per-class IoU, mean IoU and pixel accuracy.

One confusion matrix is accumulated over all images (the PASCAL VOC
convention), pixels labelled ``ignore_index`` in the ground truth left out;
IoU_c = TP / (TP + FP + FN) and mIoU averages it over the classes that occur
in the ground truth or the prediction.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from labkit.errors import DataError
from labkit.metrics.inputs import IGNORE_INDEX, safe_divide, to_numpy


def mean_iou(
    pred_semantic: Sequence[Any],
    gt_semantic: Sequence[Any],
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """``miou``, ``pixel_accuracy`` and ``iou`` (list, one per class id 0..K-1, None where absent).

    ``pred_semantic`` and ``gt_semantic`` are sequences of ``[H,W]`` class maps;
    ``num_classes`` defaults to the largest class id seen plus one.  Predicted
    values outside ``0..K-1`` count as wrong for every class.  0.0 with no
    labelled pixel.
    """
    if len(pred_semantic) != len(gt_semantic):
        raise DataError(f"{len(pred_semantic)} predicted maps for {len(gt_semantic)} ground truths")
    preds, gts = [], []
    for i, (p, g) in enumerate(zip(pred_semantic, gt_semantic)):
        p, g = to_numpy(p).astype(np.int64), to_numpy(g).astype(np.int64)
        if p.shape != g.shape:
            raise DataError(f"image {i}: predicted map {p.shape} != ground-truth map {g.shape}")
        valid = g != ignore_index
        preds.append(p[valid])
        gts.append(g[valid])
    empty = [np.zeros(0, np.int64)]
    pred, gt = np.concatenate(preds or empty), np.concatenate(gts or empty)
    if num_classes is None:
        num_classes = int(max(gt.max(initial=0), np.where(pred == ignore_index, 0, pred).max(initial=0))) + 1
    if (gt < 0).any() or (gt >= num_classes).any():
        bad = np.unique(gt[(gt < 0) | (gt >= num_classes)])[:5].tolist()
        raise DataError(f"ground-truth classes {bad} outside 0..{num_classes - 1}")
    outside = (pred < 0) | (pred >= num_classes)
    pred = np.where(outside, num_classes, pred)  # an extra "wrong" row
    confusion = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    confusion = confusion.reshape(num_classes, num_classes + 1)
    tp = np.diag(confusion[:, :num_classes])
    union = confusion.sum(1) + confusion[:, :num_classes].sum(0) - tp
    present = union > 0
    iou = safe_divide(tp, union)
    return {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(safe_divide(tp.sum(), confusion.sum())),
        "iou": [float(v) if ok else None for v, ok in zip(iou, present)],
    }
