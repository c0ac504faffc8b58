"""Cluster an embedding map into an instance map, score it, and sweep the bandwidth."""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from labkit.clustering.meanshift import MeanShift
from labkit.clustering.spatial import embedding_points, pixel_coordinates
from labkit.errors import DataError
from labkit.metrics import adjusted_rand_index, matching_accuracy, voc_ap_r


def cluster_map(
    embedding: Any,
    bandwidth: float,
    *,
    kernel: str = "flat",
    foreground: Any = None,
    coord_bandwidth: float | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Mean-shift the pixels of an embedding map ``[D, H, W]`` into a prediction dict (DESIGN.md).

    Only ``foreground`` pixels (bool ``[H, W]``; all pixels when None) are
    clustered. Returns numpy ``instances`` int64 ``[H, W]`` (0 = background;
    cluster ``k`` of :class:`MeanShift`, by decreasing mode intensity, is id
    ``k + 1``), ``ids`` (the clusters that got pixels), ``classes`` (all 1),
    ``scores`` (mode intensity / the largest one), plus ``n_clusters`` (len of
    ``ids``) and ``seconds`` (the clustering time). ``coord_bandwidth`` adds the pixel
    coordinates at that bandwidth; ``params`` go to :class:`MeanShift`
    (``bin_seeding`` defaults to True here, the fast path).
    """
    points = embedding_points(embedding)
    height, width = embedding.shape[-2:]
    keep = _foreground(foreground, (height, width))
    params.setdefault("bin_seeding", True)
    model = MeanShift(bandwidth=bandwidth, kernel=kernel, coord_bandwidth=coord_bandwidth, **params)
    coords = pixel_coordinates(height, width)[keep] if coord_bandwidth is not None else None
    start = time.perf_counter()
    model.fit(points[keep.to(points.device)], coordinates=coords)
    seconds = time.perf_counter() - start
    labels = torch.as_tensor(model.labels_).cpu()
    instances = torch.zeros(height * width, dtype=torch.int64)
    instances[keep] = labels + 1  # cluster_all=False leaves -1: no instance
    intensity = torch.as_tensor(model.intensities_).cpu().double()
    ids = torch.unique(instances[instances > 0])  # clusters that got pixels
    scores = intensity[ids - 1] / intensity.max() if len(ids) else intensity[:0]
    return {
        "instances": instances.reshape(height, width).numpy(),
        "ids": ids.numpy(),
        "classes": np.ones(len(ids), dtype=np.int64),
        "scores": scores.numpy(),
        "n_clusters": len(ids),
        "seconds": seconds,
    }


def score_instances(prediction: dict[str, Any], gt_instances: Any, scores: Any = None) -> dict[str, Any]:
    """ARI, matching accuracy (IoU 0.5) and, when scores exist, class-agnostic AP at IoU 0.5.

    ``scores``: None (use ``prediction["scores"]`` if present, else no AP),
    ``False`` (no AP) or a per-pixel score map ``[H, W]`` whose mean over an
    instance is its score.
    """
    gt = np.asarray(gt_instances.cpu() if isinstance(gt_instances, torch.Tensor) else gt_instances)
    pred = prediction["instances"]
    if gt.shape != pred.shape:
        raise DataError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    out: dict[str, Any] = {
        "ari": adjusted_rand_index(pred, gt),
        "matching_accuracy": matching_accuracy(pred, gt, iou=0.5),
        "ap50": None,
    }
    instance_scores = _instance_scores(prediction, scores)
    if instance_scores is not None:
        ids = prediction["ids"]
        entry = {"instances": pred, "ids": ids, "classes": np.ones(len(ids), dtype=np.int64), "scores": instance_scores}
        gt_ids = np.unique(gt)
        gt_ids = gt_ids[gt_ids > 0]
        truth = {"instances": gt, "ids": gt_ids, "classes": np.ones(len(gt_ids), dtype=np.int64)}
        out["ap50"] = voc_ap_r([entry], [truth], thresholds=(0.5,), class_agnostic=True)["ap_r@0.5"]
    return out


def bandwidth_sweep(
    embeddings: Any,
    gt_instances: Any,
    bandwidths: Sequence[float],
    *,
    kernel: str = "flat",
    foreground: Any = None,
    scores: Any = None,
    coord_bandwidth: float | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Cluster at every bandwidth and score against ``gt_instances`` ``[H, W]`` (0 = background).

    ``embeddings``: a map ``[D, H, W]``. Returns one row per bandwidth:
    ``bandwidth``, ``n_clusters``, ``ari``, ``matching_accuracy``, ``ap50``
    (None without scores; see :func:`score_instances`; by default the mode
    intensities score the instances) and ``seconds``.
    """
    rows = []
    for h in bandwidths:
        prediction = cluster_map(
            embeddings, float(h), kernel=kernel, foreground=foreground, coord_bandwidth=coord_bandwidth, **params
        )
        row = {"bandwidth": float(h), "n_clusters": prediction["n_clusters"]}
        row.update(score_instances(prediction, gt_instances, scores))
        row["seconds"] = prediction["seconds"]
        rows.append(row)
    return rows


def best_bandwidth(rows: Sequence[dict[str, Any]], key: str = "ari") -> dict[str, Any]:
    """The sweep row with the highest ``key`` (the smallest bandwidth among ties)."""
    if not rows:
        raise DataError("best_bandwidth: empty sweep")
    return max(rows, key=lambda r: (r[key] if r[key] is not None else -np.inf, -r["bandwidth"]))


def _foreground(foreground: Any, shape: tuple[int, int]) -> torch.Tensor:
    if foreground is None:
        return torch.ones(shape[0] * shape[1], dtype=torch.bool)
    mask = torch.as_tensor(np.asarray(foreground.cpu() if isinstance(foreground, torch.Tensor) else foreground))
    if tuple(mask.shape) != tuple(shape):
        raise DataError(f"foreground mask {tuple(mask.shape)} does not match the embedding map {tuple(shape)}")
    return mask.reshape(-1).bool()


def _instance_scores(prediction: dict[str, Any], scores: Any) -> np.ndarray | None:
    if scores is False:
        return None
    if scores is None:
        return None if prediction.get("scores") is None else np.asarray(prediction["scores"], dtype=np.float64)
    score_map = np.asarray(scores.cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    pred = prediction["instances"]
    if score_map.shape != pred.shape:
        raise DataError(f"score map {score_map.shape} does not match the prediction {pred.shape}")
    sums = np.bincount(pred.reshape(-1), weights=score_map.reshape(-1), minlength=len(prediction["ids"]) + 1)
    counts = np.bincount(pred.reshape(-1), minlength=len(prediction["ids"]) + 1)
    ids = np.asarray(prediction["ids"])
    return sums[ids] / np.maximum(counts[ids], 1)
