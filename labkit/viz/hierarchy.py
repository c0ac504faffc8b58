"""HLE's embedding hierarchy on the sphere (Kerola et al. 2021, Fig. 4) and a pixel's distance map (Fig. 1).

* :func:`hierarchy_scatter3d`: one image's 3-D unit embedding as points on the
  sphere, one trace per thing instance (coloured as in
  :func:`labkit.viz.overlay.instance_colors`) and one per stuff class, with
  every class mean as a labelled diamond.  Embeddings with ``D > 3`` are shown
  through :func:`labkit.viz.embedding3d.projection_matrix`.
* :func:`cosine_distance_map`: ``1 - e_p . e_q`` from one pixel ``p`` to every
  pixel ``q`` of the image (the paper's Fig. 1, right).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from labkit.errors import DataError
from labkit.viz.embedding3d import _scene, _subsample, projection_matrix, unit_sphere_trace
from labkit.viz.overlay import instance_colors

STUFF_COLORS = ("rgb(120,120,200)", "rgb(110,170,90)", "rgb(200,170,110)", "rgb(150,150,150)", "rgb(90,160,160)")


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def hierarchy_scatter3d(
    embedding: Any,
    instances: Any,
    semantic: Any,
    class_means: Any,
    class_names: Sequence[str] | None = None,
    *,
    max_points: int = 2500,
    seed: int = 0,
    marker_size: float = 2.0,
    title: str | None = None,
) -> go.Figure:
    """Points ``embedding [D,H,W]`` grouped by ``instances``/``semantic`` ``[H,W]``, class means ``[K,D]`` as diamonds."""
    emb = _np(embedding).astype(np.float64)
    inst, sem = _np(instances).astype(np.int64), _np(semantic).astype(np.int64)
    means = _np(class_means).astype(np.float64)
    if emb.ndim != 3 or inst.shape != emb.shape[1:] or sem.shape != inst.shape:
        raise DataError(f"hierarchy_scatter3d: embedding [D,H,W], instances and semantic [H,W] expected; "
                        f"got {emb.shape}, {inst.shape}, {sem.shape}")
    if means.ndim != 2 or means.shape[1] != emb.shape[0]:
        raise DataError(f"hierarchy_scatter3d: class means must be [K, {emb.shape[0]}], got {means.shape}")
    points = emb.reshape(emb.shape[0], -1).T
    inst, sem = inst.reshape(-1), sem.reshape(-1)
    keep = _subsample(len(points), max_points, seed)
    proj = projection_matrix(points[keep], "random", seed)
    xyz = points[keep] @ proj
    inst, sem = inst[keep], sem[keep]
    means = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    mxyz = means @ proj
    names = list(class_names) if class_names is not None else [str(k) for k in range(len(means))]
    traces: list = [unit_sphere_trace()]
    stuff_classes = sorted(set(sem[(inst == 0) & (sem != 255)].tolist()))
    for n, c in enumerate(stuff_classes):
        pick = (inst == 0) & (sem == c)
        traces.append(go.Scatter3d(
            x=xyz[pick, 0], y=xyz[pick, 1], z=xyz[pick, 2], mode="markers", name=f"{names[c]} (stuff)",
            marker=dict(size=marker_size, color=STUFF_COLORS[n % len(STUFF_COLORS)], opacity=0.5),
        ))
    ids = np.unique(inst[inst > 0])
    for i, colour in zip(ids.tolist(), instance_colors(ids)):
        pick = inst == i
        c = int(np.bincount(sem[pick][sem[pick] != 255], minlength=1).argmax()) if pick.any() else 0
        traces.append(go.Scatter3d(
            x=xyz[pick, 0], y=xyz[pick, 1], z=xyz[pick, 2], mode="markers", name=f"{names[c]} #{i}",
            marker=dict(size=marker_size + 1, color="rgb({},{},{})".format(*(int(255 * v) for v in colour))),
        ))
    traces.append(go.Scatter3d(
        x=mxyz[:, 0], y=mxyz[:, 1], z=mxyz[:, 2], mode="markers+text", name="class means",
        text=names[: len(means)], textposition="top center",
        marker=dict(size=7, symbol="diamond", color="black"),
    ))
    fig = go.Figure(data=traces)
    fig.update_layout(scene=_scene(True), margin=dict(l=0, r=0, t=30 if title else 0, b=0), title=title,
                      legend=dict(itemsizing="constant"))
    return fig


def cosine_distance_map(embedding: Any, row: int, col: int) -> np.ndarray:
    """``[H, W]`` cosine distance ``1 - e_(row,col) . e_q`` (embedding ``[D,H,W]``, renormalised)."""
    emb = _np(embedding).astype(np.float64)
    if emb.ndim != 3:
        raise DataError(f"cosine_distance_map: embedding must be [D,H,W], got {emb.shape}")
    if not (0 <= row < emb.shape[1] and 0 <= col < emb.shape[2]):
        raise DataError(f"cosine_distance_map: pixel ({row}, {col}) outside the {emb.shape[1]}x{emb.shape[2]} image")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=0, keepdims=True), 1e-12)
    return 1.0 - np.einsum("d,dhw->hw", emb[:, row, col], emb)


__all__ = ["cosine_distance_map", "hierarchy_scatter3d"]
