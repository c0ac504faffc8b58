"""Tests of the plotly embedding views and RGB projections (Kong & Fowlkes Fig. 1, 4, 11)."""
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from labkit.errors import DataError
from labkit.viz.embedding3d import (
    embedding_scatter3d,
    iterates_scatter3d,
    projection_matrix,
    random_projection_rgb,
)


def _scatter_traces(fig):
    return [t for t in fig.data if t.type == "scatter3d"]


def test_scatter_of_a_map_has_one_trace_per_instance_and_respects_max_points():
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(8, 20, 30, generator=gen)
    inst = torch.zeros(20, 30, dtype=torch.long)
    inst[:10, :10], inst[10:, 10:] = 3, 9
    fig = embedding_scatter3d(emb, inst, max_points=200)
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)
    traces = _scatter_traces(fig)
    assert [t.name for t in traces] == ["background", "instance 3", "instance 9"]
    assert sum(len(t.x) for t in traces) == 200
    with_sphere = embedding_scatter3d(emb, inst, max_points=200, sphere=True)
    assert len(with_sphere.data) == 4 and with_sphere.data[-1].type == "surface"


def test_scatter_of_points_keeps_3d_coordinates_and_is_seeded():
    pts = np.random.default_rng(1).standard_normal((50, 3))
    labels = np.array([1] * 25 + [2] * 25)
    fig = embedding_scatter3d(pts, labels)
    first = _scatter_traces(fig)[0]
    assert np.allclose(np.column_stack([first.x, first.y, first.z]), pts[:25])  # D = 3: no projection
    a = embedding_scatter3d(pts, labels, max_points=10, seed=4)
    b = embedding_scatter3d(pts, labels, max_points=10, seed=4)
    assert [list(t.x) for t in a.data] == [list(t.x) for t in b.data]


def test_normalize_puts_projected_points_on_the_unit_sphere():
    pts = np.random.default_rng(2).standard_normal((40, 16))
    fig = embedding_scatter3d(pts, np.ones(40, dtype=int), normalize=True, projection="pca")
    t = _scatter_traces(fig)[0]
    assert np.allclose(np.linalg.norm(np.column_stack([t.x, t.y, t.z]), axis=1), 1.0)


def test_projection_matrices():
    pts = np.random.default_rng(3).standard_normal((30, 10))
    random = projection_matrix(pts, "random", seed=0)
    assert np.allclose(random.T @ random, np.eye(3))  # orthonormal: unit vectors stay in the ball
    assert np.array_equal(random, projection_matrix(pts * 5, "random", seed=0))  # independent of the data
    pca = projection_matrix(pts, "pca")
    assert np.allclose(pca.T @ pca, np.eye(3))
    assert np.allclose(projection_matrix(pts[:, :2]), [[1, 0, 0], [0, 1, 0]])  # D = 2 padded with z = 0
    with pytest.raises(DataError, match="projection"):
        projection_matrix(pts, "tsne")


def test_iterates_figure_has_one_panel_per_loop():
    gen = torch.Generator().manual_seed(4)
    iterates = [torch.randn(60, 5, generator=gen) for _ in range(5)]
    labels = torch.randint(0, 3, (60,), generator=gen)
    n_labels = labels.unique().numel()
    fig = iterates_scatter3d(iterates, labels, cols=3)
    assert [a.text for a in fig.layout.annotations] == [f"loop {t}" for t in range(5)]
    assert len(fig.data) == 5 * n_labels
    assert sum(bool(t.showlegend) for t in fig.data) == n_labels  # legend once
    assert fig.layout.scene6 is not None  # a 2 x 3 grid of scenes
    chosen = iterates_scatter3d(torch.stack(iterates), labels, steps=[0, 4], sphere=True)
    assert len(chosen.data) == 2 * (n_labels + 1)


def test_iterates_share_points_and_projection():
    x0 = np.random.default_rng(5).standard_normal((40, 6))
    labels = np.ones(40, dtype=int)
    fig = iterates_scatter3d([x0, 2 * x0], labels, max_points=15)
    a, b = fig.data
    assert np.allclose(np.asarray(b.x), 2 * np.asarray(a.x))


def test_random_projection_rgb():
    emb = torch.randn(16, 7, 9, generator=torch.Generator().manual_seed(6))
    emb[:, 0, 0] = 0
    images = random_projection_rgb(emb, n=3, seed=1)
    assert len(images) == 3
    for img in images:
        assert img.shape == (7, 9, 3) and img.dtype == np.float32
        assert img.min() == 0.0 and img.max() == 1.0
    assert not np.allclose(images[0], images[1])
    assert np.array_equal(images[2], random_projection_rgb(emb, n=3, seed=1)[2])
    flat = random_projection_rgb(torch.ones(4, 2, 2), n=1)[0]
    assert np.all(flat == 0.5)


def test_bad_shapes_raise():
    with pytest.raises(DataError):
        embedding_scatter3d(np.zeros((4, 5, 6)), np.zeros((5, 7), dtype=int))
    with pytest.raises(DataError):
        iterates_scatter3d([np.zeros((5, 3))], np.zeros(4, dtype=int))
    with pytest.raises(DataError):
        random_projection_rgb(np.zeros((5, 3)))
