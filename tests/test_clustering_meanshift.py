"""labkit.clustering.MeanShift against scikit-learn, plus kernels, coordinates, chunking and edge cases."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cluster import MeanShift as SkMeanShift
from sklearn.cluster import estimate_bandwidth as sk_estimate_bandwidth
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from labkit.clustering import MeanShift, estimate_bandwidth, mean_shift, spatial_features
from labkit.clustering import meanshift as meanshift_module
from labkit.errors import DataError


def blobs(n=600, centers=4, dim=2, std=0.5, seed=0):
    return make_blobs(n_samples=n, centers=centers, n_features=dim, cluster_std=std, random_state=seed)


def same_centers(a, b, atol=1e-6):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.allclose(a[np.lexsort(a.T)], b[np.lexsort(b.T)], atol=atol)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bin_seeding", [True, False])
def test_agrees_with_sklearn_on_blobs(seed, bin_seeding):
    X, _ = blobs(seed=seed)
    ref = SkMeanShift(bandwidth=1.5, bin_seeding=bin_seeding).fit(X)
    ours = MeanShift(bandwidth=1.5, bin_seeding=bin_seeding).fit(X)
    assert len(ours.cluster_centers_) == len(ref.cluster_centers_)
    assert adjusted_rand_score(ref.labels_, ours.labels_) >= 0.99
    assert same_centers(ours.cluster_centers_, ref.cluster_centers_)


def test_binned_phase_agrees_with_sklearn(monkeypatch):
    """Force the approximate binned phase on a small problem: the exact phase still lands on sklearn's modes."""
    monkeypatch.setattr(meanshift_module, "EXACT_PAIRS", 0)
    X, _ = blobs(n=1500, centers=5, dim=4, std=0.3, seed=3)
    X = np.vstack([X, X[:1] + 25 + np.random.default_rng(0).normal(scale=0.05, size=(12, 4))])  # a small object
    ref = SkMeanShift(bandwidth=1.0, bin_seeding=True).fit(X)
    ours = MeanShift(bandwidth=1.0, bin_seeding=True).fit(X)
    assert len(ours.cluster_centers_) == len(ref.cluster_centers_) == 6
    assert adjusted_rand_score(ref.labels_, ours.labels_) >= 0.99
    assert same_centers(ours.cluster_centers_, ref.cluster_centers_, atol=1e-3)
    assert len(np.unique(ours.labels_[-12:])) == 1 and (ours.labels_ == ours.labels_[-1]).sum() == 12


def test_small_object_is_its_own_cluster():
    X, y = blobs(n=2000, centers=3, dim=8, std=0.1, seed=4)
    small = X[0] + 3.0 + np.random.default_rng(1).normal(scale=0.05, size=(8, 8))
    labels = MeanShift(bandwidth=0.5, bin_seeding=True).fit_predict(np.vstack([X, small]))
    assert len(np.unique(labels)) == 4
    assert set(labels[-8:]) == {labels[-1]} and (labels == labels[-1]).sum() == 8
    assert adjusted_rand_score(y, labels[:-8]) == 1.0


def test_shuffling_only_renames_labels():
    X, _ = blobs(n=800, centers=5, dim=3, std=0.4, seed=5)
    perm = np.random.default_rng(0).permutation(len(X))
    a = MeanShift(bandwidth=1.2, bin_seeding=True).fit(X)
    b = MeanShift(bandwidth=1.2, bin_seeding=True).fit(X[perm])
    assert adjusted_rand_score(a.labels_[perm], b.labels_) == 1.0
    assert same_centers(a.cluster_centers_, b.cluster_centers_, atol=1e-5)


def test_chunk_size_does_not_change_the_result(monkeypatch):
    monkeypatch.setattr(meanshift_module, "EXACT_PAIRS", 0)
    X, _ = blobs(n=700, centers=4, dim=3, std=0.4, seed=6)
    big = MeanShift(bandwidth=1.0, bin_seeding=True).fit(X)
    small = MeanShift(bandwidth=1.0, bin_seeding=True, chunk_size=97).fit(X)
    np.testing.assert_array_equal(big.labels_, small.labels_)
    np.testing.assert_allclose(big.cluster_centers_, small.cluster_centers_, atol=1e-9)


def test_numpy_and_torch_inputs_agree():
    X, _ = blobs(n=400, centers=3, dim=4, std=0.4, seed=7)
    from_numpy = MeanShift(bandwidth=1.2, bin_seeding=True).fit(X.astype(np.float32))
    from_torch = MeanShift(bandwidth=1.2, bin_seeding=True).fit(torch.from_numpy(X.astype(np.float32)))
    assert isinstance(from_numpy.labels_, np.ndarray) and isinstance(from_torch.labels_, torch.Tensor)
    assert from_torch.labels_.dtype == torch.int64 and from_torch.cluster_centers_.dtype == torch.float32
    np.testing.assert_array_equal(from_numpy.labels_, from_torch.labels_.numpy())
    np.testing.assert_allclose(from_numpy.cluster_centers_, from_torch.cluster_centers_.numpy())


@pytest.mark.parametrize("kernel", ["gaussian", "vmf"])
def test_smooth_kernels_find_the_blobs(kernel):
    X, y = blobs(n=900, centers=5 * np.eye(3), std=0.15, seed=8)  # apart in direction too, for the sphere
    bandwidth = 0.15 if kernel == "vmf" else 0.5
    model = MeanShift(bandwidth=bandwidth, kernel=kernel, bin_seeding=True).fit(X)
    assert len(model.cluster_centers_) == 3
    assert adjusted_rand_score(y, model.labels_) == 1.0
    if kernel == "vmf":
        np.testing.assert_allclose(np.linalg.norm(model.cluster_centers_, axis=1), 1.0, atol=1e-6)


def test_gaussian_mode_is_the_weighted_mean_fixed_point():
    X, _ = blobs(n=300, centers=1, dim=2, std=1.0, seed=9)
    center = MeanShift(bandwidth=0.8, kernel="gaussian", truncate=50.0).fit(X).cluster_centers_[0]
    w = np.exp(-((X - center) ** 2).sum(1) / (2 * 0.8**2))
    np.testing.assert_allclose((w[:, None] * X).sum(0) / w.sum(), center, atol=2e-3)


def test_coordinates_separate_objects_with_the_same_embedding():
    rng = np.random.default_rng(10)
    emb = np.zeros((2, 12, 30), dtype=np.float32) + rng.normal(scale=0.01, size=(2, 12, 30)).astype(np.float32)
    emb[:, :, 10:20] += 5.0  # background stripe in the middle: objects at columns 0-9 and 20-29 look alike
    points = torch.from_numpy(emb).reshape(2, -1).T
    assert len(MeanShift(bandwidth=0.5, bin_seeding=True).fit(points).cluster_centers_) == 2
    rows, cols = np.meshgrid(np.arange(12), np.arange(30), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()], 1).astype(np.float32)
    model = MeanShift(bandwidth=0.5, coord_bandwidth=8.0, bin_seeding=True).fit(points, coordinates=coords)
    labels = model.labels_.reshape(12, 30)
    assert len(np.unique(labels[:, :10])) == 1 and len(np.unique(labels[:, 20:])) == 1
    assert labels[0, 0] != labels[0, 29]
    assert model.cluster_centers_.shape[1] == 4  # embedding + (row, col) in pixels
    joint = MeanShift(bandwidth=0.5, bin_seeding=True).fit(spatial_features(emb, 0.5, 8.0))
    assert adjusted_rand_score(joint.labels_.numpy(), labels.ravel().numpy()) == 1.0


def test_cluster_all_false_leaves_orphans_unlabelled():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0]])
    seeds = np.array([[0.0, 0.0]])
    model = MeanShift(bandwidth=1.0, seeds=seeds, cluster_all=False).fit(X)
    np.testing.assert_array_equal(model.labels_, [0, 0, 0, -1])
    ref = SkMeanShift(bandwidth=1.0, seeds=seeds, cluster_all=False).fit(X)
    np.testing.assert_array_equal(model.labels_, ref.labels_)
    np.testing.assert_array_equal(model.predict(np.array([[4.0, 4.0]])), [0])


def test_edge_cases():
    empty = MeanShift(bandwidth=1.0).fit(np.zeros((0, 3)))
    assert empty.labels_.shape == (0,) and empty.cluster_centers_.shape == (0, 3)
    one = MeanShift(bandwidth=1.0).fit(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(one.labels_, [0])
    np.testing.assert_allclose(one.cluster_centers_, [[1.0, 2.0]])
    same = MeanShift(bandwidth=0.5, bin_seeding=True).fit(np.ones((50, 4)))
    assert len(same.cluster_centers_) == 1 and set(same.labels_) == {0}
    bad = np.ones((5, 2))
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        MeanShift(bandwidth=1.0).fit(bad)
    with pytest.raises(DataError, match="shape"):
        MeanShift(bandwidth=1.0).fit(np.ones(5))
    with pytest.raises(DataError, match="bandwidth"):
        MeanShift(bandwidth=-1.0).fit(np.ones((5, 2)))
    with pytest.raises(DataError, match="kernel"):
        MeanShift(bandwidth=1.0, kernel="cosine").fit(np.ones((5, 2)))
    with pytest.raises(DataError, match="zero"):
        MeanShift(bandwidth=1.0, kernel="vmf").fit(np.zeros((5, 2)))
    with pytest.raises(DataError, match="within bandwidth"):
        MeanShift(bandwidth=0.1, seeds=np.array([[9.0, 9.0]])).fit(np.zeros((5, 2)))


def test_estimator_api():
    model = MeanShift(bandwidth=2.0, bin_seeding=True, kernel="gaussian")
    assert clone(model).get_params()["kernel"] == "gaussian"
    X, _ = blobs(n=200, centers=2, seed=11)
    centers, labels = mean_shift(X, 2.0, bin_seeding=True)
    model.set_params(kernel="flat").fit(X)
    np.testing.assert_array_equal(labels, model.labels_)
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert model.n_features_in_ == 2 and model.n_iter_ >= 1 and len(model.intensities_) == len(centers)


def test_estimate_bandwidth_matches_sklearn():
    X, _ = blobs(n=300, centers=3, seed=12)
    ours = estimate_bandwidth(X, quantile=0.3, n_samples=None)
    assert ours == pytest.approx(sk_estimate_bandwidth(X, quantile=0.3), rel=1e-5)
    assert MeanShift().fit(X).cluster_centers_.shape[1] == 2  # bandwidth=None estimates it
