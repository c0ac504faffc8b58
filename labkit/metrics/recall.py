"""Average recall of class-agnostic segment proposals at k proposals per image.

Kong & Fowlkes 2018 (Sec. 5.3, Fig. 8, Table 1) evaluate instance proposals by
average recall (Hosang et al. 2016): a ground-truth object counts as recalled
at IoU threshold T when one of the image's k highest-scoring proposals
overlaps it with IoU >= T.  Recall is pooled over all objects of the dataset
("total average recall"); AR averages it over T = 0.50:0.05:0.95 (the
thresholds of their Fig. 8), and Table 1 reports it at T = 0.5 alone.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from labkit.metrics.inputs import overlaps, ranked, read_pairs

COCO_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)


def average_recall(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    k: Sequence[int] = (10, 60),
) -> dict[str, float]:
    """``ar@K`` (mean recall over IoU 0.50:0.05:0.95) and ``ar50@K`` (IoU 0.5) for each K.

    Classes are ignored.  With no ground truth every value is 0.0.
    """
    ks = [int(v) for v in k]
    best: dict[int, list[np.ndarray]] = {v: [] for v in ks}  # k -> best IoU of every gt object
    for pred, gt in read_pairs(predictions, ground_truths):
        iou = overlaps(pred, gt)[ranked(pred.scores)]
        for v in ks:
            top = iou[:v]
            best[v].append(top.max(0) if len(top) else np.zeros(len(gt)))
    out = {}
    for v in ks:
        covered = np.concatenate(best[v]) if best[v] else np.zeros(0)
        recall = [float(np.mean(covered >= t)) if covered.size else 0.0 for t in COCO_THRESHOLDS]
        out[f"ar@{v}"] = float(np.mean(recall))
        out[f"ar50@{v}"] = recall[0]
    return out
