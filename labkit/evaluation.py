"""Run a method over a dataset and score it with :mod:`labkit.metrics`.

``predict_dataset`` produces one prediction and one ground truth per sample,
``evaluate_predictions`` turns them into the flat dict that ``labkit evaluate``
writes as JSON, ``format_table`` renders that dict for people, and
``evaluate`` does all of it for a method, model and dataset.

Keys of the result (all scores on a 0–1 scale):

- always: ``n_images``, ``n_instances`` (ground truth), ``n_predicted``;
- task ``"instance"``: ``ap, ap50, ap75, ap_s, ap_m, ap_l`` (COCO mask AP),
  ``ap_r@0.5 … ap_r@0.9, ap_r_mean`` (VOC AP^r), ``ar@10, ar50@10, ar@60,
  ar50@60`` (proposal recall), ``matching_accuracy`` (IoU 0.5), ``ari``;
  ``pq, sq, rq`` and their ``_things``/``_stuff`` variants when the data has
  stuff classes and every prediction carries a ``semantic`` map;
- task ``"semantic"``: ``miou``, ``pixel_accuracy``;
- ``per_class``: ``{class name: {...}}`` when the data has more than one
  class (COCO AP, AP^r at 0.5 and mean, PQ where computed, ``n_gt``; ``iou``
  for the semantic task).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.data.contract import collate, ground_truth
from labkit.errors import DataError, LabkitError
from labkit.methods.base import Method
from labkit.metrics import (
    adjusted_rand_index,
    average_recall,
    coco_mask_ap,
    matching_accuracy,
    mean_iou,
    panoptic_quality,
    voc_ap_r,
)
from labkit.metrics.inputs import read_entry, read_pairs, to_numpy

log = logging.getLogger(__name__)

TASKS = ("instance", "semantic")
PER_CLASS_KEYS = ("ap", "ap50", "ap75", "ap_r@0.5", "ap_r_mean", "pq", "sq", "rq")


def predict_dataset(
    method: Method,
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = True,
    **decode_params: Any,
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor] | None]]:
    """Predictions (``method.decode``) and ground truths for every sample, on the CPU.

    The ground truth is None for a sample without ``instances`` (images to
    predict on, with no masks).

    The model runs in eval mode under ``torch.no_grad`` (its training flag is
    restored afterwards).  Consecutive samples of equal size are batched with
    :func:`labkit.data.contract.collate`, so datasets of mixed image sizes work
    at any ``batch_size``.
    """
    if batch_size < 1:
        raise LabkitError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    predictions: list[dict[str, torch.Tensor]] = []
    ground_truths: list[dict[str, torch.Tensor] | None] = []

    def run(samples: list[dict[str, Any]]) -> None:
        batch = collate(samples)
        outputs = model(batch["image"].to(device))
        decoded = method.decode(outputs, **decode_params)
        if len(decoded) != len(samples):
            raise LabkitError(
                f"method {method.key!r} decoded {len(decoded)} predictions for {len(samples)} images"
            )
        predictions.extend({k: _cpu(v) for k, v in p.items()} for p in decoded)
        ground_truths.extend(ground_truth(s) if "instances" in s else None for s in samples)

    was_training = model.training
    model.to(device).eval()
    try:
        with torch.no_grad():
            pending: list[dict[str, Any]] = []
            for i in tqdm(range(len(dataset)), desc="predict", disable=not progress):
                sample = dataset[i]
                if pending and (
                    len(pending) == batch_size or sample["image"].shape != pending[0]["image"].shape
                ):
                    run(pending)
                    pending = []
                pending.append(sample)
            if pending:
                run(pending)
    finally:
        model.train(was_training)
    return predictions, ground_truths


def _cpu(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def evaluate_predictions(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    *,
    class_names: Sequence[str] | None = None,
    things: Sequence[int] | None = None,
    stuff: Sequence[int] | None = None,
    task: str = "instance",
    max_dets: int = 100,
) -> dict[str, Any]:
    """Every metric that applies to the data, as one JSON-ready dict (keys in the module docstring).

    ``class_names`` (index 0 = background) names the per-class rows; the data
    is scored class-agnostically when it has a single foreground class.
    ``things`` defaults to every class that is not background or ``stuff``.
    ``max_dets`` is COCO's detections per image (raise it for crowded scenes).
    """
    if task not in TASKS:
        raise LabkitError(f"unknown task {task!r}; expected one of {TASKS}")
    if len(predictions) != len(ground_truths):
        raise DataError(f"{len(predictions)} predictions for {len(ground_truths)} ground truths")
    unlabelled = [i for i, g in enumerate(ground_truths) if g is None]
    if unlabelled:
        raise DataError(f"images {unlabelled[:5]} have no ground-truth instance masks to evaluate against")
    gt_classes = [_classes(g) for g in ground_truths] + [np.zeros(0, dtype=np.int64)]
    results: dict[str, Any] = {
        "n_images": len(ground_truths),
        "n_instances": int(sum(len(c) for c in gt_classes)),
        "n_predicted": int(sum(len(_classes(p)) for p in predictions)),
    }
    pixel_rows: dict[str, Any] = {}
    if task == "semantic":  # pixel scores, then the instance scores of its components below
        pixel = _semantic_scores(predictions, ground_truths, class_names)
        pixel_rows = pixel.pop("per_class", {})
        results |= pixel
    present = sorted(set(np.concatenate(gt_classes).tolist()))
    agnostic = (class_names is None or len(class_names) <= 2) and len(present) <= 1
    per_class = not agnostic
    panoptic_ready = bool(stuff) and all(p.get("semantic") is not None for p in predictions)
    pairs = read_pairs(predictions, ground_truths)  # validated and converted once for every metric
    preds, gts = [p for p, _ in pairs], [g for _, g in pairs]
    coco = coco_mask_ap(preds, gts, max_dets, class_agnostic=agnostic, per_class=per_class)
    voc = voc_ap_r(preds, gts, class_agnostic=agnostic, per_class=per_class)
    results |= {k: v for k, v in coco.items() if k != "per_class"}
    results |= {k: v for k, v in voc.items() if k != "per_class"}
    results |= average_recall(preds, gts)
    results["matching_accuracy"] = matching_accuracy(preds, gts, iou=0.5)
    results["ari"] = adjusted_rand_index(preds, gts)
    rows: dict[int, dict[str, Any]] = {}
    if per_class:
        for c, row in coco["per_class"].items():
            rows.setdefault(c, {}).update(row)
        for c, row in voc["per_class"].items():
            rows.setdefault(c, {}).update(row)
    if panoptic_ready:
        stuff = [int(c) for c in stuff]
        if things is None:
            candidates = range(1, len(class_names)) if class_names else present
            things = [c for c in candidates if c not in stuff]
        panoptic = panoptic_quality(preds, gts, things, stuff, per_class=True)
        results |= {k: v for k, v in panoptic.items() if k != "per_class"}
        for c, row in panoptic["per_class"].items():
            rows.setdefault(c, {}).update(row)
    if per_class:
        counts = np.bincount(np.concatenate(gt_classes), minlength=max(rows, default=0) + 1)
        results["per_class"] = {
            _name(c, class_names): {k: row[k] for k in PER_CLASS_KEYS if k in row} | {"n_gt": int(counts[c])}
            for c, row in sorted(rows.items())
        }
    for name, row in pixel_rows.items():
        results.setdefault("per_class", {}).setdefault(name, {}).update(row)
    return results


def _classes(item: Mapping[str, Any]) -> np.ndarray:
    """The class of each instance of a prediction/ground truth, as the metrics read it.

    Given ``classes``; else the majority ``semantic`` value under each instance
    where there is a semantic map; else 1 (:func:`labkit.metrics.inputs.read_entry`).
    """
    if item.get("classes") is not None:
        return to_numpy(item["classes"]).astype(np.int64).reshape(-1)
    return read_entry(item, "instances").classes


def _name(c: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)


def _semantic_scores(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    class_names: Sequence[str] | None,
) -> dict[str, Any]:
    """mIoU and pixel accuracy; class-agnostic ground truth counts as foreground (1) vs background."""
    missing = [i for i, p in enumerate(predictions) if p.get("semantic") is None]
    if missing:
        raise DataError(f"task 'semantic' needs a 'semantic' map in every prediction; missing in {missing[:5]}")
    gt_maps = [
        g["semantic"] if g.get("semantic") is not None else (to_numpy(g["instances"]) > 0).astype(np.int64)
        for g in ground_truths
    ]
    scores = mean_iou(
        [p["semantic"] for p in predictions],
        gt_maps,
        num_classes=len(class_names) if class_names else None,
    )
    out: dict[str, Any] = {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"]}
    if len(scores["iou"]) > 2 or (class_names and len(class_names) > 2):
        out["per_class"] = {
            _name(c, class_names): {"iou": v} for c, v in enumerate(scores["iou"]) if v is not None
        }
    return out


def format_table(results: Mapping[str, Any]) -> str:
    """A plain-text, aligned rendering of :func:`evaluate_predictions`' dict."""
    scalars = [(k, v) for k, v in results.items() if not isinstance(v, Mapping)]
    width = max((len(k) for k, _ in scalars), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{k:<{width}}  {_cell(v)}" for k, v in scalars]
    per_class = results.get("per_class")
    if per_class:
        columns = list(dict.fromkeys(k for row in per_class.values() for k in row))
        name_width = max(len("class"), *(len(str(n)) for n in per_class))
        widths = [max(len(c), 6) for c in columns]
        header = f"{'class':<{name_width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
        lines += ["", header, "-" * len(header)]
        for name, row in per_class.items():
            cells = "  ".join(f"{_cell(row.get(c, '')):>{w}}" for c, w in zip(columns, widths))
            lines.append(f"{str(name):<{name_width}}  {cells}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return str(value)


def evaluate(
    method: Method,
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_dets: int = 100,
    **decode_params: Any,
) -> dict[str, Any]:
    """:func:`predict_dataset` then :func:`evaluate_predictions` with the dataset's class lists.

    Reads ``class_names``, ``things`` and ``stuff`` from the dataset when it
    has them, and the task from ``method.task``.
    """
    predictions, ground_truths = predict_dataset(
        method, model, dataset, batch_size=batch_size, device=device, progress=progress, **decode_params
    )
    results = evaluate_predictions(
        predictions,
        ground_truths,
        class_names=getattr(dataset, "class_names", None),
        things=getattr(dataset, "things", None),
        stuff=getattr(dataset, "stuff", None),
        task=method.task,
        max_dets=max_dets,
    )
    log.info("evaluated %s on %d images", method.key, results["n_images"])
    return results
