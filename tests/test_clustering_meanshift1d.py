"""1-D mean shift (DVIS): exact against a brute-force reference (scikit-learn on values[:, None])."""
import numpy as np
import pytest
import torch
from sklearn.cluster import MeanShift as SkMeanShift
from sklearn.metrics import adjusted_rand_score

from labkit.clustering import mean_shift_1d
from labkit.errors import DataError


def label_values(seed=0):
    """A DVIS-like label map: a few objects with real-valued labels ~1 apart, plus noise."""
    rng = np.random.default_rng(seed)
    values = np.repeat([0.0, 1.1, 2.0, 3.3, 4.1], [300, 120, 80, 200, 15]) + rng.normal(scale=0.12, size=715)
    return rng.permutation(values)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("seeding", ["bins", "all"])
def test_exact_against_brute_force(seed, seeding):
    values = label_values(seed)
    results = mean_shift_1d(values, [0.9, 0.4], seeding=seeding)
    for h, (centers, labels) in zip([0.9, 0.4], results):
        ref = SkMeanShift(bandwidth=h, bin_seeding=seeding == "bins").fit(values[:, None])
        np.testing.assert_allclose(np.sort(centers), np.sort(ref.cluster_centers_[:, 0]), atol=1e-9)
        assert adjusted_rand_score(ref.labels_, labels) == 1.0
        np.testing.assert_allclose(centers[labels], ref.cluster_centers_[ref.labels_, 0], atol=1e-9)


def test_maps_masks_and_tensors():
    values = label_values(2)[:700].reshape(20, 35)
    mask = np.ones_like(values, dtype=bool)
    mask[:, :5] = False
    centers, labels = mean_shift_1d(values, 0.4, mask=mask)
    assert labels.shape == values.shape and (labels[:, :5] == -1).all() and (labels[:, 5:] >= 0).all()
    ref_centers, ref_labels = mean_shift_1d(values[:, 5:].ravel(), 0.4)
    np.testing.assert_allclose(centers, ref_centers)
    np.testing.assert_array_equal(labels[:, 5:].ravel(), ref_labels)
    t_centers, t_labels = mean_shift_1d(torch.from_numpy(values), 0.4, mask=torch.from_numpy(mask))
    assert isinstance(t_labels, torch.Tensor) and t_labels.shape == (20, 35)
    np.testing.assert_array_equal(t_labels.numpy(), labels)


def test_larger_bandwidth_merges():
    values = label_values(3)
    (c_wide, _), (c_narrow, _) = mean_shift_1d(values, [0.9, 0.4])
    assert len(c_wide) < len(c_narrow)


def test_edge_cases():
    centers, labels = mean_shift_1d(np.zeros(0), 0.5)
    assert centers.shape == (0,) and labels.shape == (0,)
    centers, labels = mean_shift_1d(np.array([2.5]), 0.5)
    np.testing.assert_allclose(centers, [2.5])
    centers, labels = mean_shift_1d(np.full(10, 7.0), 0.5)
    np.testing.assert_allclose(centers, [7.0]) and np.testing.assert_array_equal(labels, 0)
    with pytest.raises(DataError, match="NaN"):
        mean_shift_1d(np.array([0.0, np.nan]), 0.5)
    with pytest.raises(DataError, match="bandwidth"):
        mean_shift_1d(np.zeros(3), 0.0)
    with pytest.raises(DataError, match="mask"):
        mean_shift_1d(np.zeros(3), 0.5, mask=np.ones(4, dtype=bool))
