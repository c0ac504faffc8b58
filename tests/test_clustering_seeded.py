"""The seeded (one instance at a time) mean shift of De Brabandere et al."""
import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from labkit.clustering import seeded_mean_shift
from labkit.errors import DataError


def blobs(seed=0):
    return make_blobs(n_samples=400, centers=4 * np.eye(4), cluster_std=0.1, random_state=seed)


def test_finds_every_blob_and_labels_everything():
    X, y = blobs()
    centers, labels = seeded_mean_shift(X, 0.5)
    assert len(centers) == 4 and (labels >= 0).all()
    assert adjusted_rand_score(y, labels) == 1.0
    for k in range(4):  # each center is the mean of its ball (a fixed point of the shift)
        np.testing.assert_allclose(centers[k], X[labels == k].mean(0), atol=5e-3)


def test_repeatable_and_order_independent():
    X, _ = blobs(seed=1)
    c1, l1 = seeded_mean_shift(X, 0.5, seed=3)
    c2, l2 = seeded_mean_shift(X, 0.5, seed=3)
    np.testing.assert_array_equal(l1, l2)
    perm = np.random.default_rng(0).permutation(len(X))
    _, l3 = seeded_mean_shift(X[perm], 0.5, seed=7)
    assert adjusted_rand_score(l1[perm], l3) == 1.0


def test_stopping_rules():
    X, _ = blobs(seed=2)
    centers, labels = seeded_mean_shift(X, 0.5, max_tries=1)
    assert len(centers) == 1 and (labels == 0).sum() == 100 and (labels == -1).sum() == 300
    centers, labels = seeded_mean_shift(X, 0.5, min_size=101)  # every ball holds 100 points: all rejected
    assert len(centers) == 0 and (labels == -1).all()
    centers, _ = seeded_mean_shift(X, 0.5, min_unlabelled=301)  # stops once fewer than 301 are left
    assert len(centers) == 1


def test_overlap_rejection():
    """Points spread along a line: balls around successive modes overlap, and max_overlap decides."""
    line = np.linspace(0, 3, 301)[:, None]
    loose_c, loose_l = seeded_mean_shift(line, 0.6, max_overlap=1.0, seed=1)
    strict_c, strict_l = seeded_mean_shift(line, 0.6, max_overlap=0.0, seed=1)

    def overlapping(centers, labels):
        return any((labels[np.abs(line[:, 0] - c[0]) <= 0.6] != k).any() for k, c in enumerate(centers))

    assert overlapping(loose_c, loose_l) and not overlapping(strict_c, strict_l)
    assert len(strict_c) < len(loose_c)


def test_cluster_all_and_tensor_io():
    X, y = blobs(seed=4)
    centers, labels = seeded_mean_shift(torch.from_numpy(X), 0.3, max_tries=4, cluster_all=True, seed=0)
    assert isinstance(labels, torch.Tensor) and (labels >= 0).all()
    assert adjusted_rand_score(y, labels.numpy()) == 1.0


def test_vmf_kernel_on_the_sphere():
    X, y = blobs(seed=5)
    centers, labels = seeded_mean_shift(X, 0.3, kernel="vmf")
    assert adjusted_rand_score(y, labels) == 1.0
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 1.0, atol=1e-6)


def test_edge_cases():
    centers, labels = seeded_mean_shift(np.zeros((0, 3)), 1.0)
    assert centers.shape == (0, 3) and labels.shape == (0,)
    centers, labels = seeded_mean_shift(np.ones((1, 2)), 1.0)
    np.testing.assert_array_equal(labels, [0])
    centers, labels = seeded_mean_shift(np.ones((20, 2)), 1.0)
    assert len(centers) == 1 and (labels == 0).all()
    with pytest.raises(DataError, match="NaN"):
        seeded_mean_shift(np.array([[np.nan, 0.0]]), 1.0)
    with pytest.raises(DataError, match="max_overlap"):
        seeded_mean_shift(np.ones((3, 2)), 1.0, max_overlap=2.0)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_seeds_find_the_same_clusters(batch_size):
    """Seeds shifted together give the clusters of one-at-a-time seeds (another random seed order)."""
    X, y = make_blobs(n_samples=600, centers=4 * np.eye(6), cluster_std=0.08, random_state=6)
    centers, labels = seeded_mean_shift(X, 0.5, batch_size=batch_size, seed=2)
    assert len(centers) == 6 and adjusted_rand_score(y, labels) == 1.0
    for k in range(6):  # every center is still a fixed point: the mean of its ball
        np.testing.assert_allclose(centers[k], X[labels == k].mean(0), atol=5e-3)


def test_batched_seeds_respect_max_tries_and_min_size():
    X, _ = blobs(seed=2)
    for batch_size in (1, 64):
        centers, labels = seeded_mean_shift(X, 0.5, max_tries=2, batch_size=batch_size)
        assert len(centers) == 2 and (labels >= 0).sum() == 200  # two tries, two blobs, no more
        centers, _ = seeded_mean_shift(X, 0.5, min_size=101, batch_size=batch_size)
        assert len(centers) == 0


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_batch_size(bad):
    with pytest.raises(DataError, match="batch_size"):
        seeded_mean_shift(np.ones((3, 2)), 1.0, batch_size=bad)


def test_shifting_against_a_subset_finds_the_same_clusters():
    X, y = make_blobs(n_samples=3000, centers=4 * np.eye(5), cluster_std=0.08, random_state=8)
    centers, labels = seeded_mean_shift(X, 0.5, max_shift_points=300, seed=1)
    assert len(centers) == 5 and adjusted_rand_score(y, labels) == 1.0
    full, _ = seeded_mean_shift(X, 0.5, seed=1)
    order = [int(np.argmin(np.linalg.norm(full - c, axis=1))) for c in centers]
    np.testing.assert_allclose(centers, full[order], atol=0.05)  # a mean of 300 points instead of 3000
    with pytest.raises(DataError, match="max_shift_points"):
        seeded_mean_shift(X, 0.5, max_shift_points=0)
