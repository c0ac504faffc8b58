"""Run a method over a dataset and score it with :mod:`labkit.metrics`.

``predict_dataset`` produces one prediction and one ground truth per sample,
``evaluate_predictions`` turns them into the flat dict that ``labkit evaluate``
writes as JSON, ``format_table`` renders that dict for people, and
``evaluate`` does all of it for a method, model and dataset.

Images larger than the training crop can be predicted by sliding window
(``tile=``): the network and the decoder run on overlapping tiles of the
training size (what the model saw, pixel-coordinate channels included), and
the tiles' instance maps are stitched into one (:func:`stitch_tiles`): each
pixel is taken from the tile whose centre region holds it, and an instance
is one instance across tiles when the tiles agree on it in their overlap,
so an object that crosses a tile border comes out whole.

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
    tile: int | Sequence[int] | None = None,
    overlap: int | None = None,
    **decode_params: Any,
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor] | None]]:
    """Predictions (``method.decode``) and ground truths for every sample, on the CPU.

    With ``tile``, an image larger than ``tile`` (in either side) is predicted
    by sliding window with ``overlap`` pixels between tiles (default a quarter
    of the tile) and stitched (:func:`predict_tiled`); smaller images are
    predicted whole.

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

    tile_hw = None if tile is None else _tile_size(tile)
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.no_grad():
            pending: list[dict[str, Any]] = []
            for i in tqdm(range(len(dataset)), desc="predict", disable=not progress):
                sample = dataset[i]
                windows = image_windows(sample["image"].shape[-2:], tile_hw, overlap)
                if windows is not None:
                    outputs = window_outputs(model, sample["image"], windows, device=device, batch_size=batch_size)
                    predictions.append(decode_windows(method, outputs, windows, **decode_params))
                    ground_truths.append(ground_truth(sample) if "instances" in sample else None)
                    continue
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


# -- sliding-window prediction ---------------------------------------------------------------------------------

Window = tuple[int, int, int, int]  # top, left, height, width


def _tile_size(tile: int | Sequence[int]) -> tuple[int, int]:
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(int(t) for t in tile)
    if th < 1 or tw < 1:
        raise LabkitError(f"tile size must be positive, got {tile}")
    return th, tw


def needs_tiles(size: Sequence[int], tile: int | Sequence[int]) -> bool:
    """Whether an image of ``size`` ``(H, W)`` is larger than ``tile`` in either side."""
    th, tw = _tile_size(tile)
    return int(size[0]) > th or int(size[1]) > tw


def image_windows(
    size: Sequence[int], tile: int | Sequence[int] | None, overlap: int | None = None
) -> list[Window] | None:
    """:func:`tile_windows` for an image of ``size`` larger than ``tile``; None when it fits or ``tile`` is None."""
    if tile is None or not needs_tiles(size, tile):
        return None
    return tile_windows(size, tile, overlap)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_windows(size: Sequence[int], tile: int | Sequence[int], overlap: int | None = None) -> list[Window]:
    """Windows ``(top, left, height, width)`` covering an image of ``size`` with tiles of ``tile``.

    Neighbouring tiles overlap by at least ``overlap`` pixels (default a
    quarter of the tile side); the last tile of a row or column is aligned
    with the image border.  A side shorter than the tile is one window of
    the image's length.
    """
    H, W = int(size[0]), int(size[1])
    th, tw = _tile_size(tile)
    if overlap is None:
        overlap = min(th, tw) // 4
    overlap = int(overlap)
    if not 0 <= overlap < min(th, tw):
        raise LabkitError(f"tile overlap must be in [0, tile side), got {overlap} for tiles of {th} x {tw}")
    return [
        (y, x, min(th, H), min(tw, W))
        for y in _starts(H, th, overlap) for x in _starts(W, tw, overlap)
    ]


def window_outputs(
    model: nn.Module, image: torch.Tensor, windows: Sequence[Window], *, device: str | torch.device = "cpu",
    batch_size: int = 4,
) -> dict[str, torch.Tensor]:
    """The model's outputs on every window of ``image [C,H,W]``, stacked ``[n_windows, ...]`` on the CPU."""
    device = torch.device(device)
    chunks: list[dict[str, torch.Tensor]] = []
    step = max(1, int(batch_size))
    with torch.no_grad():
        for i in range(0, len(windows), step):
            crops = torch.stack([image[:, y:y + h, x:x + w] for y, x, h, w in windows[i:i + step]])
            out = model(crops.to(device))
            chunks.append({k: v.detach().cpu() for k, v in out.items() if isinstance(v, torch.Tensor)})
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}


def decode_windows(
    method: Method, outputs: dict[str, torch.Tensor], windows: Sequence[Window], **decode_params: Any
) -> dict[str, torch.Tensor]:
    """Decode every window's outputs and stitch them into one prediction (:func:`stitch_tiles`).

    Stitching keeps only the instance maps, so with more than one window the
    method decodes for the map alone (:meth:`~labkit.methods.base.Method.map_only`).
    """
    if len(windows) > 1:
        decode_params = method.map_only(decode_params)
    decoded = method.decode(outputs, **decode_params)
    if len(decoded) != len(windows):
        raise LabkitError(f"method {method.key!r} decoded {len(decoded)} predictions for {len(windows)} tiles")
    decoded = [{k: _cpu(v) for k, v in p.items()} for p in decoded]
    if len(windows) == 1:
        return decoded[0]
    return stitch_tiles(decoded, windows)


def predict_tiled(
    method: Method, model: nn.Module, image: torch.Tensor, tile: int | Sequence[int], *,
    overlap: int | None = None, device: str | torch.device = "cpu", batch_size: int = 4, **decode_params: Any,
) -> dict[str, torch.Tensor]:
    """One prediction for ``image [C,H,W]`` by sliding window: network and decoder per tile, then stitched."""
    windows = tile_windows(image.shape[-2:], tile, overlap)
    was_training = model.training
    model.to(device).eval()
    try:
        outputs = window_outputs(model, image, windows, device=device, batch_size=batch_size)
    finally:
        model.train(was_training)
    return decode_windows(method, outputs, windows, **decode_params)


#: pixels on each side of the cut line between two tiles where their instances are linked (stitch_tiles)
LINK_BAND = 8


def _owned_ranges(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Per tile along one axis, the half-open range of pixels it owns: up to the middle of each overlap."""
    cuts = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [length]
    return [(cuts[i], cuts[i + 1]) for i in range(len(starts))]


def stitch_tiles(
    predictions: Sequence[Mapping[str, Any]], windows: Sequence[Window], *, min_overlap: float = 0.5,
    min_pixels: int = 4, link_band: int | None = LINK_BAND,
) -> dict[str, torch.Tensor]:
    """One prediction from per-tile predictions on overlapping ``windows`` (a regular grid, as tile_windows).

    Every pixel takes its label from the tile that owns it: tiles split each
    overlap down the middle, so a pixel comes from the tile where it lies
    farthest from a tile border (where the network saw the most context).
    Instance ``i`` of tile A and ``j`` of tile B are one instance when, inside
    the overlap of A and B, they share at least ``min_overlap`` of the smaller
    one's pixels there (and ``min_pixels`` pixels); links are followed
    transitively (union-find), so an object spread over several tiles is one
    instance.  Its class and score come from the tile holding most of it.
    ``semantic`` maps are stitched by ownership; overlapping proposals
    (``masks``) are not stitched and are left out.

    ``link_band``: compare two tiles' labels only on the pixels within
    ``link_band`` pixels of *both* tiles' owned ranges, i.e. in a band around
    the cut line between them (``None``: the whole overlap).  A tile's
    decoding is worst near its own border (least context); with the whole
    overlap, an instance that merges two objects there links both to their
    instances in the other tile, and the union-find spreads the merge even
    where the owning tile separated them.  The default, 8 pixels, was chosen
    on the validation image of ``benchmarks/bench_own_images.py`` (touching
    nuclei in 128-pixel tiles; see ``benchmarks/RESULTS.md``).
    """
    if link_band is not None and link_band < 0:
        raise LabkitError(f"link_band must be >= 0 or None, got {link_band}")
    if len(predictions) != len(windows) or not windows:
        raise LabkitError(f"{len(predictions)} tile predictions for {len(windows)} windows")
    height = max(y + h for y, _, h, _ in windows)
    width = max(x + w for _, x, _, w in windows)
    ys = sorted({y for y, _, _, _ in windows})
    xs = sorted({x for _, x, _, _ in windows})
    th, tw = windows[0][2], windows[0][3]
    rows = dict(zip(ys, _owned_ranges(ys, th, height)))
    cols = dict(zip(xs, _owned_ranges(xs, tw, width)))

    labels = [np.asarray(to_numpy(p["instances"]), dtype=np.int64) for p in predictions]
    offsets = np.cumsum([0] + [int(lab.max(initial=0)) + 1 for lab in labels])
    parent = np.arange(int(offsets[-1]))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    for a in range(len(windows)):
        for b in range(a + 1, len(windows)):
            ya, xa, ha, wa = windows[a]
            yb, xb, hb, wb = windows[b]
            y0, y1 = max(ya, yb), min(ya + ha, yb + hb)
            x0, x1 = max(xa, xb), min(xa + wa, xb + wb)
            if link_band is not None:  # only near the cut line: within link_band of both owned ranges
                y0 = max(y0, rows[ya][0] - link_band, rows[yb][0] - link_band)
                y1 = min(y1, rows[ya][1] + link_band, rows[yb][1] + link_band)
                x0 = max(x0, cols[xa][0] - link_band, cols[xb][0] - link_band)
                x1 = min(x1, cols[xa][1] + link_band, cols[xb][1] + link_band)
            if y1 <= y0 or x1 <= x0:
                continue
            la = labels[a][y0 - ya:y1 - ya, x0 - xa:x1 - xa].reshape(-1)
            lb = labels[b][y0 - yb:y1 - yb, x0 - xb:x1 - xb].reshape(-1)
            area_a = np.bincount(la)
            area_b = np.bincount(lb)
            both = (la > 0) & (lb > 0)
            if not both.any():
                continue
            pairs, counts = np.unique(np.stack([la[both], lb[both]]), axis=1, return_counts=True)
            for (i, j), n in zip(pairs.T.tolist(), counts.tolist()):
                if n >= min_pixels and n >= min_overlap * min(area_a[i], area_b[j]):
                    ra, rb = find(int(offsets[a] + i)), find(int(offsets[b] + j))
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)

    canvas = np.zeros((height, width), dtype=np.int64)  # global node + 1 (0 = background)
    semantic = None
    if all(p.get("semantic") is not None for p in predictions):
        semantic = np.zeros((height, width), dtype=np.int64)
    for t, (y, x, h, w) in enumerate(windows):
        r0, r1 = rows[y]
        c0, c1 = cols[x]
        piece = labels[t][r0 - y:r1 - y, c0 - x:c1 - x]
        canvas[r0:r1, c0:c1] = np.where(piece > 0, piece + offsets[t] + 1, 0)
        if semantic is not None:
            semantic[r0:r1, c0:c1] = to_numpy(predictions[t]["semantic"])[r0 - y:r1 - y, c0 - x:c1 - x]
    if any(p.get("masks") is not None for p in predictions):
        log.debug("tiled prediction: per-tile proposals (masks) are not stitched and are left out")

    nodes, owned = np.unique(canvas[canvas > 0] - 1, return_counts=True)
    roots = np.array([find(int(n)) for n in nodes], dtype=np.int64)
    final_roots = np.unique(roots)
    new_id = {int(r): k + 1 for k, r in enumerate(final_roots.tolist())}
    lut = np.zeros(int(offsets[-1]) + 1, dtype=np.int64)
    for n, r in zip(nodes.tolist(), roots.tolist()):
        lut[n + 1] = new_id[r]
    instances = lut[canvas]

    tile_of = np.searchsorted(offsets, nodes, side="right") - 1
    classes = np.ones(len(final_roots), dtype=np.int64)
    scores = np.ones(len(final_roots), dtype=np.float32)
    best = np.full(len(final_roots), -1, dtype=np.int64)
    for n, r, t, area in zip(nodes.tolist(), roots.tolist(), tile_of.tolist(), owned.tolist()):
        k = new_id[r] - 1
        if area <= best[k]:
            continue
        best[k] = area
        local = n - int(offsets[t])
        pred = predictions[t]
        ids = to_numpy(pred["ids"]).astype(np.int64).reshape(-1)
        hit = np.nonzero(ids == local)[0]
        if len(hit):
            if pred.get("classes") is not None:
                classes[k] = int(to_numpy(pred["classes"]).reshape(-1)[hit[0]])
            if pred.get("scores") is not None:
                scores[k] = float(to_numpy(pred["scores"]).reshape(-1)[hit[0]])
    out = {
        "instances": torch.from_numpy(instances),
        "ids": torch.arange(1, len(final_roots) + 1, dtype=torch.int64),
        "classes": torch.from_numpy(classes),
        "scores": torch.from_numpy(scores),
    }
    if semantic is not None:
        out["semantic"] = torch.from_numpy(semantic)
    return out


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
