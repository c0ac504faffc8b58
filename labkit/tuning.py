"""Tuning decode parameters on validation images, and ``RUN_DIR/decode.json``.

``labkit tune`` sweeps a method's decode parameters (``Method.decode_grid()``:
a bandwidth, a concentration, a smallest area...) on validation images,
scores each setting, and writes the best values to ``RUN_DIR/decode.json``
unless they beat the decoding in use by one standard error of its score or
less (:func:`choose_point`: a few validation images are a noisy judge);
``labkit evaluate`` and ``labkit predict`` read them by default, and
``--set KEY=VALUE`` still wins.

The network runs once per image (:func:`cache_outputs`); only decoding is
repeated per setting, so a sweep costs decoding time.  The score
(:data:`METRICS`) is by default the matching accuracy at IoU 0.5 (TP / (TP +
FP + FN), the cell-segmentation score: it counts every missed, split or
merged object and needs no instance scores) on data with one object class,
COCO mask AP50 where classes must also be right, and panoptic quality (PQ,
things and stuff together) for a panoptic method (``hle``) on data with stuff
classes, where its stuff regions are part of what the decoding decides.

``decode.json`` is one JSON object ``{"param": value, ...}``; it is written
atomically (:func:`labkit.io.write_json`), so a crash never leaves half a file.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.errors import LabkitError
from labkit.io import write_json

log = logging.getLogger(__name__)

DECODE_NAME = "decode.json"
TUNE_NAME = "tune.json"
METRICS = ("auto", "matching_accuracy", "ap50", "ap", "pq")


def _run_dir(run_dir: str | os.PathLike) -> Path:
    """The run folder itself when given a checkpoint file inside it (``RUN_DIR/model.pt``)."""
    path = Path(run_dir)
    return path.parent if path.suffix == ".pt" else path


def decode_path(run_dir: str | os.PathLike) -> Path:
    """``RUN_DIR/decode.json`` (``run_dir`` may also be a checkpoint file inside the run folder)."""
    return _run_dir(run_dir) / DECODE_NAME


def write_decode_json(run_dir: str | os.PathLike, params: dict) -> Path:
    """Write ``params`` (decode parameter -> value) to ``RUN_DIR/decode.json`` atomically; return the path."""
    if not isinstance(params, dict):
        raise LabkitError(f"decode parameters must be a dict of name -> value, got {type(params).__name__}")
    bad = [k for k in params if not isinstance(k, str) or not k]
    if bad:
        raise LabkitError(f"decode parameter names must be non-empty strings, got {bad!r}")
    path = decode_path(run_dir)
    write_json(path, params)
    return path


def read_decode_json(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The decode parameters in ``RUN_DIR/decode.json``; ``{}`` when the file does not exist.

    Raises:
        LabkitError: the file is empty, not valid JSON, or not a JSON object.
    """
    path = decode_path(run_dir)
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise LabkitError(f"{path} is empty; delete it or run `labkit tune` again to rewrite it")
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabkitError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}); delete it or run `labkit tune` again"
        ) from None
    if not isinstance(params, dict):
        raise LabkitError(
            f"{path} must hold a JSON object of decode parameters, got {type(params).__name__}; "
            "delete it or run `labkit tune` again"
        )
    return params


def resolve_metric(metric: str, dataset: Any, method: Any = None) -> str:
    """``"auto"`` -> ``"pq"`` for a panoptic ``method`` on data with stuff classes, else ``"matching_accuracy"``
    for data with one object class and ``"ap50"`` for several."""
    if metric not in METRICS:
        raise LabkitError(f"unknown tuning metric {metric!r}; choices: {', '.join(METRICS)}")
    if metric != "auto":
        return metric
    if getattr(dataset, "stuff", None) and getattr(method, "panoptic", False):
        return "pq"
    names = getattr(dataset, "class_names", None)
    return "matching_accuracy" if names is None or len(names) <= 2 else "ap50"


def score(
    predictions: Sequence[dict], ground_truths: Sequence[dict], metric: str, *, stuff: Sequence[int] | None = None,
) -> float:
    """The figure ``metric`` (not ``"auto"``) of ``predictions`` against ``ground_truths``, 0-1, higher better.

    ``"pq"`` needs the data's ``stuff`` classes; every other class is a thing.
    """
    from labkit.metrics import coco_mask_ap, matching_accuracy, panoptic_quality

    if not ground_truths or any(g is None for g in ground_truths):
        raise LabkitError("tuning needs validation images with instance masks")
    if metric == "matching_accuracy":
        return float(matching_accuracy(predictions, ground_truths, iou=0.5))
    if metric in ("ap50", "ap"):
        return float(coco_mask_ap(predictions, ground_truths)[metric])
    if metric == "pq":
        if not stuff:
            raise LabkitError("the pq metric needs data with stuff classes (use ap50 or matching_accuracy)")
        if any(p.get("semantic") is None for p in predictions):
            raise LabkitError("the pq metric needs predictions with a semantic map (a panoptic method such as hle)")
        stuff = [int(c) for c in stuff]
        seen = {int(c) for item in [*predictions, *ground_truths] for c in torch.as_tensor(item["semantic"]).unique()}
        things = sorted(seen - set(stuff) - {0, 255})
        return float(panoptic_quality(predictions, ground_truths, things, stuff)["pq"])
    raise LabkitError(f"unknown tuning metric {metric!r}; choices: {', '.join(METRICS[1:])}")


def grid_points(grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the ``grid``'s values, in order (the last parameter varies fastest)."""
    if not isinstance(grid, dict):
        raise LabkitError(f"a decode grid must be a dict of name -> candidate values, got {type(grid).__name__}")
    empty = [k for k, v in grid.items() if len(v) == 0]
    if empty:
        raise LabkitError(f"decode grid parameter(s) {empty} have no candidate values")
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(list(grid[k]) for k in keys))]


@dataclass
class CachedImage:
    """One image's network outputs on its windows (the whole image: one window), and its ground truth."""

    outputs: dict[str, torch.Tensor]
    windows: list[tuple[int, int, int, int]]
    truth: dict[str, torch.Tensor] | None


def cache_outputs(
    model: nn.Module, dataset: Any, *, tile: int | None = None, overlap: int | None = None,
    device: str | torch.device = "cpu", batch_size: int = 4, progress: bool = True,
) -> list[CachedImage]:
    """Run the network once over ``dataset`` (by tiles for images larger than ``tile``); outputs on the CPU."""
    from labkit.data.contract import ground_truth
    from labkit.evaluation import image_windows, window_outputs

    was_training = model.training
    model.to(device).eval()
    cached = []
    try:
        for i in tqdm(range(len(dataset)), desc="network", disable=not progress):
            sample = dataset[i]
            size = tuple(sample["image"].shape[-2:])
            windows = image_windows(size, tile, overlap) or [(0, 0, size[0], size[1])]
            outputs = window_outputs(model, sample["image"], windows, device=device, batch_size=batch_size)
            cached.append(CachedImage(outputs, windows, ground_truth(sample) if "instances" in sample else None))
    finally:
        model.train(was_training)
    return cached


def decode_cached(method: Any, cached: Sequence[CachedImage], **params: Any) -> list[dict[str, torch.Tensor]]:
    """Predictions of every cached image decoded with ``params`` (tiles stitched)."""
    from labkit.evaluation import decode_windows

    return [decode_windows(method, item.outputs, item.windows, **params) for item in cached]


def sweep(
    method: Any, cached: Sequence[CachedImage], grid: dict[str, Sequence[Any]], *, metric: str,
    fixed: dict[str, Any] | None = None, progress: bool = True, stuff: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Score every point of ``grid`` (plus the ``fixed`` decode parameters): ``[{"params", "score"}, ...]``.

    ``stuff``: the data's stuff classes (for ``metric="pq"``)."""
    fixed = dict(fixed or {})
    truths = [item.truth for item in cached]
    points = grid_points(grid)
    curve = []
    with tqdm(points, desc=f"tune {method.key}", disable=not progress, unit="setting") as bar:
        for point in bar:
            params = {**point, **fixed}
            value = score(decode_cached(method, cached, **params), truths, metric, stuff=stuff)
            curve.append({"params": point, "score": value})
            bar.set_postfix_str(f"{metric}={value:.3f}", refresh=False)
            log.debug("tune %s %s: %s = %.4f", method.key, point, metric, value)
    return curve


def best_point(curve: Sequence[dict[str, Any]], prefer: dict[str, Any] | None = None) -> dict[str, Any]:
    """The point with the highest score; among equals, the one that keeps most of ``prefer`` (the decoding
    in use before tuning: a tie on a few validation images is no reason to move), then the first in grid order.
    """
    if not curve:
        raise LabkitError("nothing to tune: the decode grid is empty")
    prefer = prefer or {}

    def kept(row: dict[str, Any]) -> int:
        return sum(k in prefer and prefer[k] == v for k, v in row["params"].items())

    return max(curve, key=lambda row: (row["score"], kept(row)))  # max keeps the first of equal keys


def decoding_in_use(method: Any, names: Sequence[str], saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The value in use of each decode parameter in ``names``: ``saved`` (decode.json) first, else the
    method's parameter, else the property that resolves a ``None`` default (``discriminative``'s
    ``bandwidth``, ``recurrent``'s ``delta``, ``dvis``'s ``fg_threshold``); ``None`` where none of them says."""
    saved = saved or {}
    values = {}
    for name in names:
        value = saved.get(name, getattr(getattr(method, "defaults", None), name, None))
        values[name] = getattr(method, name, None) if value is None else value
    return values


def standard_error(value: float, n_objects: int) -> float:
    """One binomial standard error of a score ``value`` in ``[0, 1]`` measured on ``n_objects`` objects:
    ``sqrt(value (1 - value) / n)`` (0 without objects).

    Matching accuracy, AP50 and PQ are not proportions of independent trials,
    but each moves by about ``1 / n`` per object decided differently, so this
    is the scale on which a difference between two decodings of the same few
    validation images is noise.
    """
    if n_objects < 1:
        return 0.0
    value = min(max(float(value), 0.0), 1.0)
    return math.sqrt(value * (1.0 - value) / n_objects)


def check_margin(margin: Any) -> float | str:
    """``margin`` as :func:`labkit.workflows.tune_run` takes it: ``"se"`` (one :func:`standard_error`) or a
    number >= 0; anything else is a :class:`LabkitError`."""
    number = isinstance(margin, (int, float)) and not isinstance(margin, bool)
    if not (margin == "se" or (number and margin >= 0)):
        raise LabkitError(f"expected 'se' or a number >= 0 for the tuning margin, got {margin!r}")
    return margin


def choose_point(
    curve: Sequence[dict[str, Any]], in_use: dict[str, Any], in_use_score: float, margin: float,
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """``(best, params, kept)``: the sweep's best row and the decoding to write after it.

    ``best`` is :func:`best_point` (ties keeping ``in_use``); ``params`` its
    settings, unless it beats ``in_use_score``, the score of the decoding in
    use, by ``margin`` or less: then ``params`` is ``in_use`` and ``kept`` true.
    With ``margin`` one :func:`standard_error` of ``in_use_score`` this is the
    one-standard-error rule of model selection (Breiman et al., *Classification
    and Regression Trees*, 1984; Hastie, Tibshirani & Friedman, *The Elements
    of Statistical Learning*, Sec. 7.10): on one or two validation images a
    gain of a nucleus or two is within noise, and moving the decoding on it
    can as well lower the score on new images as raise it.
    """
    if not margin >= 0:
        raise LabkitError(f"the tuning margin must be >= 0, got {margin}")
    best = best_point(curve, prefer=in_use)
    kept = best["score"] - in_use_score <= margin
    return best, dict(in_use if kept else best["params"]), kept


def format_curve(curve: Sequence[dict[str, Any]], metric: str, best: dict[str, Any] | None = None) -> str:
    """A plain-text table of the sweep, one row per setting, the best marked with ``*``."""
    if not curve:
        return "(empty sweep)"
    keys = list(curve[0]["params"])
    widths = [max(len(k), *(len(_fmt(r["params"][k])) for r in curve)) for k in keys]
    header = "  ".join(f"{k:>{w}}" for k, w in zip(keys, widths)) + f"  {metric:>{max(len(metric), 6)}}"
    lines = [header, "-" * len(header)]
    for row in curve:
        cells = "  ".join(f"{_fmt(row['params'][k]):>{w}}" for k, w in zip(keys, widths))
        mark = " *" if best is not None and row is best else ""
        lines.append(f"{cells}  {row['score']:>{max(len(metric), 6)}.3f}{mark}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = [
    "DECODE_NAME", "METRICS", "TUNE_NAME", "CachedImage", "best_point", "cache_outputs", "check_margin", "choose_point",
    "decode_cached", "decode_path", "decoding_in_use", "format_curve", "grid_points", "read_decode_json",
    "resolve_metric", "score", "standard_error", "sweep", "write_decode_json",
]
