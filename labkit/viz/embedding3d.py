"""Pixel embeddings in 3D (plotly) and as RGB images.

* :func:`embedding_scatter3d`: one image's embedding as a 3D point cloud, one
  trace per ground-truth instance (Kong & Fowlkes, Fig. 1 / Fig. 4 top).
* :func:`iterates_scatter3d`: the recurrent mean-shift iterates side by side,
  one 3D panel per loop (Kong & Fowlkes, Fig. 4).
* :func:`random_projection_rgb`: random 3D projections of the embedding shown
  as RGB images (Kong & Fowlkes, Fig. 11).

Embeddings with ``D > 3`` are projected to 3D by :func:`projection_matrix`:
``"random"`` (default, the paper's choice) uses a fixed, seeded random
orthonormal ``[D, 3]`` matrix, so unit vectors land inside the unit ball and
the same seed gives the same view of every image; ``"pca"`` uses the three
leading principal directions of the shown points.  ``D < 3`` is padded with
zero coordinates.  Points are subsampled uniformly (``max_points``, seeded);
small instances may then have few points.

Figures are ``plotly.graph_objects.Figure`` (no widgets); colours match
:func:`labkit.viz.overlay.instance_colors`, background is grey.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit.errors import DataError
from labkit.viz.overlay import instance_colors

BACKGROUND_COLOR = "rgb(160,160,160)"


def projection_matrix(points: np.ndarray, method: str = "random", seed: int = 0) -> np.ndarray:
    """``[D, 3]`` matrix taking ``points [N, D]`` to 3D (identity-like when ``D <= 3``)."""
    dim = points.shape[1]
    if dim <= 3:
        return np.eye(dim, 3)
    if method == "random":
        gaussian = np.random.default_rng(seed).standard_normal((dim, 3))
        q, _ = np.linalg.qr(gaussian)
        return q
    if method == "pca":
        centred = points - points.mean(axis=0, keepdims=True)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return vt[:3].T
    raise DataError(f"unknown projection {method!r}; use 'random' or 'pca'")


def embedding_scatter3d(
    embedding: Any,
    instances: Any,
    max_points: int = 3000,
    sphere: bool = False,
    seed: int = 0,
    *,
    projection: str = "random",
    normalize: bool = False,
    marker_size: float = 2.0,
) -> go.Figure:
    """3D scatter of an embedding coloured by ground-truth instance.

    Args:
        embedding: ``[D, H, W]`` map or ``[N, D]`` points (tensor or array).
        instances: ``[H, W]`` or ``[N]`` instance ids, 0 = background.
        max_points: uniform subsample size.
        sphere: add a translucent unit-sphere mesh (one extra trace).
        seed: seeds the subsample and the random projection.
        projection: ``"random"`` or ``"pca"`` for ``D > 3``.
        normalize: rescale the projected points to unit length.

    Returns:
        A figure with one trace per instance shown (background first), plus the sphere.
    """
    points, labels = _points_and_labels(embedding, instances)
    keep = _subsample(len(points), max_points, seed)
    points, labels = points[keep], labels[keep]
    xyz = _to_3d(points, projection_matrix(points, projection, seed), normalize)
    fig = go.Figure(data=_instance_traces(xyz, labels, marker_size))
    if sphere:
        fig.add_trace(unit_sphere_trace())
    fig.update_layout(scene=_scene(sphere), margin=dict(l=0, r=0, t=30, b=0), legend=dict(itemsizing="constant"))
    return fig


def iterates_scatter3d(
    iterates: Sequence[Any],
    labels: Any,
    *,
    steps: Sequence[int] | None = None,
    cols: int = 4,
    max_points: int = 1500,
    sphere: bool = False,
    seed: int = 0,
    projection: str = "random",
    marker_size: float = 2.0,
) -> go.Figure:
    """The recurrent mean-shift iterates, one 3D panel per loop (Kong & Fowlkes, Fig. 4).

    Args:
        iterates: ``[X^0, ..., X^T]``, each ``[N, D]`` (or a ``[T+1, N, D]`` tensor).
        labels: ``[N]`` ground-truth instance ids of the points.
        steps: which loops to show (default: all).
        cols: panels per row.
        max_points, sphere, seed, projection, marker_size: as in
            :func:`embedding_scatter3d`; the same points and the same projection
            (fitted on ``X^0``) are used in every panel.

    Returns:
        A figure with ``len(steps)`` scenes titled ``loop t``; each holds one
        trace per instance (legend shown once) plus the sphere if asked.
    """
    arrays = [_numpy(x).astype(np.float64) for x in iterates]
    labels = _numpy(labels).reshape(-1).astype(np.int64)
    if not arrays or any(a.ndim != 2 or a.shape[0] != labels.shape[0] for a in arrays):
        raise DataError(
            f"iterates_scatter3d: expected a list of [N,D] iterates with N = {labels.shape[0]} labels, "
            f"got shapes {[a.shape for a in arrays]}"
        )
    steps = list(range(len(arrays))) if steps is None else list(steps)
    keep = _subsample(labels.shape[0], max_points, seed)
    proj = projection_matrix(arrays[0][keep], projection, seed)
    cols = max(1, min(cols, len(steps)))
    rows = math.ceil(len(steps) / cols)
    fig = make_subplots(
        rows=rows, cols=cols, specs=[[{"type": "scene"}] * cols] * rows,
        subplot_titles=[f"loop {t}" for t in steps],
        horizontal_spacing=0.01, vertical_spacing=0.05,
    )
    for k, t in enumerate(steps):
        xyz = _to_3d(arrays[t][keep], proj, normalize=False)
        traces = _instance_traces(xyz, labels[keep], marker_size, show_legend=(k == 0))
        if sphere:
            traces.append(unit_sphere_trace())
        for trace in traces:
            fig.add_trace(trace, row=k // cols + 1, col=k % cols + 1)
    fig.update_scenes(_scene(sphere))
    fig.update_layout(height=320 * rows, margin=dict(l=0, r=0, t=30, b=0), legend=dict(itemsizing="constant"))
    return fig


def random_projection_rgb(embedding: Any, n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``n`` random 3D projections of ``embedding [D, H, W]`` as RGB images (Kong & Fowlkes, Fig. 11).

    Each image uses its own seeded Gaussian ``[D, 3]`` projection; every
    channel is min-max scaled to ``[0, 1]`` (a constant channel becomes 0.5).

    Returns:
        ``n`` float32 arrays ``[H, W, 3]`` in ``[0, 1]``.
    """
    emb = _numpy(embedding).astype(np.float64)
    if emb.ndim != 3:
        raise DataError(f"random_projection_rgb: embedding must be [D,H,W], got shape {emb.shape}")
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        rgb = np.einsum("dhw,dc->hwc", emb, rng.standard_normal((emb.shape[0], 3)))
        low, high = rgb.min(axis=(0, 1)), rgb.max(axis=(0, 1))
        span = high - low
        scaled = np.where(span > 0, (rgb - low) / np.where(span > 0, span, 1.0), 0.5)
        images.append(scaled.astype(np.float32))
    return images


def unit_sphere_trace(resolution: int = 30, opacity: float = 0.12) -> go.Surface:
    """A translucent grey unit sphere."""
    theta, phi = np.meshgrid(np.linspace(0, np.pi, resolution), np.linspace(0, 2 * np.pi, 2 * resolution))
    return go.Surface(
        x=np.sin(theta) * np.cos(phi), y=np.sin(theta) * np.sin(phi), z=np.cos(theta),
        opacity=opacity, showscale=False, colorscale=[[0, "lightgrey"], [1, "lightgrey"]],
        hoverinfo="skip", name="unit sphere", showlegend=False,
    )


def _instance_traces(xyz: np.ndarray, labels: np.ndarray, marker_size: float, show_legend: bool = True) -> list:
    ids = np.unique(labels)
    colours = instance_colors(ids)
    traces = []
    for i, colour in zip(ids.tolist(), colours):
        pick = labels == i
        rgb = BACKGROUND_COLOR if i == 0 else "rgb({},{},{})".format(*(int(255 * c) for c in colour))
        name = "background" if i == 0 else f"instance {i}"
        traces.append(
            go.Scatter3d(
                x=xyz[pick, 0], y=xyz[pick, 1], z=xyz[pick, 2], mode="markers", name=name,
                legendgroup=name, showlegend=show_legend, marker=dict(size=marker_size, color=rgb),
            )
        )
    return traces


def _scene(sphere: bool) -> dict:
    scene = dict(aspectmode="data", xaxis_title="e1", yaxis_title="e2", zaxis_title="e3")
    if sphere:
        scene["aspectmode"] = "cube"
        for axis in ("xaxis", "yaxis", "zaxis"):
            scene[axis] = dict(range=[-1.1, 1.1], title=scene.pop(f"{axis}_title"))
    return scene


def _to_3d(points: np.ndarray, proj: np.ndarray, normalize: bool) -> np.ndarray:
    xyz = points @ proj
    if normalize:
        xyz = xyz / np.maximum(np.linalg.norm(xyz, axis=1, keepdims=True), 1e-12)
    return xyz


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _points_and_labels(embedding: Any, instances: Any) -> tuple[np.ndarray, np.ndarray]:
    emb = _numpy(embedding).astype(np.float64)
    labels = _numpy(instances).astype(np.int64)
    if emb.ndim == 3 and labels.shape == emb.shape[1:]:
        return emb.reshape(emb.shape[0], -1).T, labels.reshape(-1)
    if emb.ndim == 2 and labels.shape == emb.shape[:1]:
        return emb, labels
    raise DataError(
        f"expected embedding [D,H,W] with instances [H,W], or [N,D] with [N]; "
        f"got {emb.shape} and {labels.shape}"
    )


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
