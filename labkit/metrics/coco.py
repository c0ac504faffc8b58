"""COCO-style mask average precision through pycocotools' ``COCOeval`` (iouType ``"segm"``).

The ground truths and predictions are turned into in-memory COCO datasets
(masks RLE-encoded with ``pycocotools.mask.encode``) and scored by the
official evaluator, so the numbers are the ones the COCO leaderboard computes:
AP averaged over IoU 0.50:0.05:0.95 and 101 recall points, AP50, AP75 and AP
for small (< 32² px), medium and large (> 96² px) objects.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from labkit.errors import LabkitError
from labkit.metrics.inputs import IGNORE_INDEX, Entry, read_pairs

KEYS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")


def coco_mask_ap(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    max_dets: int = 100,
    *,
    class_agnostic: bool = False,
    ignore_void: bool = True,
    per_class: bool = False,
) -> dict[str, Any]:
    """COCO mask AP on a 0–1 scale: ``ap, ap50, ap75, ap_s, ap_m, ap_l``.

    Args:
        predictions, ground_truths: one dict per image (DESIGN.md, "Data contract").
        max_dets: detections kept per image, by score (COCO uses 100; crowded
            scenes need more).
        class_agnostic: score every instance as one class, ignoring ``classes``.
        ignore_void: a ground-truth ``semantic`` 255 region becomes a COCO
            crowd region of every class predicted in that image, so a detection
            lying at least IoU-threshold inside void (intersection over the
            detection's area) is ignored rather than a false positive.
        per_class: also return ``per_class`` = ``{class id: {ap, ap50, ap75}}``
            for the classes that have ground truth.

    Where COCOeval has nothing to average (no ground truth at all, or none in an
    area range, where pycocotools prints -1) the value returned is 0.0.
    """
    if int(max_dets) < 1:
        raise LabkitError(f"max_dets must be a positive integer, got {max_dets!r}")
    pairs = read_pairs(predictions, ground_truths)
    images, gt_anns, dt_anns = [], [], []
    for image_id, (pred, gt) in enumerate(pairs, start=1):
        h, w = gt.shape
        images.append({"id": image_id, "height": h, "width": w})
        gt_classes = np.ones_like(gt.classes) if class_agnostic else gt.classes
        dt_classes = np.ones_like(pred.classes) if class_agnostic else pred.classes
        gt_anns += _annotations(_stack(gt), image_id, gt_classes)
        dt_anns += _annotations(_stack(pred), image_id, dt_classes, pred.scores)
        if ignore_void and gt.semantic is not None:
            void = gt.semantic == IGNORE_INDEX
            if void.any():
                classes = np.unique(dt_classes)
                crowd = np.asfortranarray(np.broadcast_to(void[..., None], (h, w, len(classes))), np.uint8)
                gt_anns += _annotations(crowd, image_id, classes, crowd=True)
    if not any(not a["iscrowd"] for a in gt_anns):
        return _empty(per_class)
    for number, ann in enumerate(gt_anns + dt_anns, start=1):
        ann["id"] = number  # COCOeval needs ids > 0, unique per dataset
    class_ids = sorted({a["category_id"] for a in gt_anns + dt_anns})
    categories = [{"id": c, "name": str(c)} for c in class_ids]
    evaluator = COCOeval(_coco(images, gt_anns, categories), _coco(images, dt_anns, categories), "segm")
    evaluator.params.maxDets = sorted({1, 10, int(max_dets)})  # COCOeval sorts them anyway
    m = evaluator.params.maxDets.index(int(max_dets))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][..., m]  # [T IoUs, R recalls, K classes, A areas]
    thresholds = evaluator.params.iouThrs
    out: dict[str, Any] = _summary(precision, thresholds)
    if per_class:
        out["per_class"] = {
            c: {key: value for key, value in _summary(precision[:, :, k : k + 1], thresholds).items()
                if key in ("ap", "ap50", "ap75")}
            for k, c in enumerate(class_ids)
            if (precision[:, :, k, 0] > -1).any()
        }
    return out


def _stack(entry: Entry) -> np.ndarray:
    """The entry's masks as the Fortran-ordered uint8 ``[H, W, N]`` that ``mask.encode`` takes.

    Built as a C-ordered ``[N, W, H]`` array and viewed transposed, so no copy is made.
    """
    if entry.masks is not None:
        stack = np.ascontiguousarray(entry.masks.transpose(0, 2, 1))
    else:
        index_t = np.ascontiguousarray(entry.index.T)
        stack = index_t[None] == np.arange(1, len(entry) + 1)[:, None, None]
    return np.asfortranarray(stack.view(np.uint8).transpose(2, 1, 0))  # already Fortran: no copy


def _annotations(
    masks: np.ndarray,
    image_id: int,
    classes: np.ndarray,
    scores: np.ndarray | None = None,
    crowd: bool = False,
) -> list[dict[str, Any]]:
    """COCO annotations of the Fortran-ordered uint8 masks ``[H, W, N]``."""
    if masks.shape[2] == 0:
        return []
    rles = mask_util.encode(masks)
    # pycocotools' mask.area overflows (uint8) for 256 or more masks at once: count the pixels here
    areas = masks.sum(axis=(0, 1), dtype=np.int64)
    anns = []
    for k, rle in enumerate(rles):
        ann = {
            "image_id": image_id,
            "category_id": int(classes[k]),
            "segmentation": rle,
            "area": float(areas[k]),
            "iscrowd": int(crowd),
        }
        if scores is not None:
            ann["score"] = float(scores[k])
        anns.append(ann)
    return anns


def _coco(images: list, annotations: list, categories: list) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _summary(precision: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """COCOeval.summarize's AP numbers from ``precision[T, R, K, A]`` (maxDets fixed)."""
    iou50, iou75 = np.isclose(thresholds, 0.5), np.isclose(thresholds, 0.75)
    return {
        "ap": _mean_valid(precision[..., 0]),
        "ap50": _mean_valid(precision[iou50, ..., 0]),
        "ap75": _mean_valid(precision[iou75, ..., 0]),
        "ap_s": _mean_valid(precision[..., 1]),
        "ap_m": _mean_valid(precision[..., 2]),
        "ap_l": _mean_valid(precision[..., 3]),
    }


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else 0.0


def _empty(per_class: bool) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(KEYS, 0.0)
    if per_class:
        out["per_class"] = {}
    return out
