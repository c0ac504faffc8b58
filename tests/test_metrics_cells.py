"""Matching accuracy (TP / (TP + FP + FN)) and the adjusted Rand index."""
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from labkit.errors import DataError
from labkit.metrics import adjusted_rand_index, matching_accuracy


def test_matching_accuracy_hand_computed():
    gt = np.zeros((20, 20), np.int64)
    gt[0:5, 0:5], gt[0:5, 10:15], gt[10:15, 0:5] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[0:5, 0:5] = 4  # = object 1: IoU 1
    pred[0:5, 10:14] = 9  # 20 of object 2's 25 px: IoU 0.8
    pred[10:15, 0:2] = 2  # 10 of object 3's 25 px: IoU 0.4, not a match at 0.5
    pred[15:20, 15:20] = 3  # on background
    # at 0.5: TP 2, FP 2 (the 0.4 piece and the background blob), FN 1 (object 3) -> 2/5
    assert matching_accuracy(pred, gt) == pytest.approx(2 / 5)
    # at 0.9: only object 1 -> TP 1, FP 3, FN 2 -> 1/6
    assert matching_accuracy(pred, gt, iou=0.9) == pytest.approx(1 / 6)
    # at 0.3: TP 3, FP 1, FN 0 -> 3/4; torch tensors accepted
    assert matching_accuracy(torch.from_numpy(pred), torch.from_numpy(gt), iou=0.3) == pytest.approx(3 / 4)


def test_matching_accuracy_low_threshold_uses_optimal_matching():
    # g1 = cols 0:10, g2 = cols 10:20 (rows 0:5, 50 px each). P covers cols 5:15 (50 px):
    # IoU 25/75 = 1/3 with each; Q covers cols 0:2 (10 px): IoU 10/50 = 0.2 with g1.
    # At 0.15 a greedy match of P to g1 leaves Q unmatched (TP 1); the optimal matching is P-g2, Q-g1:
    # TP 2, FP 0, FN 0 -> 1.0
    gt = np.zeros((5, 20), np.int64)
    gt[:, 0:10], gt[:, 10:20] = 1, 2
    pred = np.zeros_like(gt)
    pred[:, 5:15], pred[:, 0:2] = 1, 2
    assert matching_accuracy(pred, gt, iou=0.15) == pytest.approx(1.0)


def test_matching_accuracy_pools_counts_over_images():
    gt = np.zeros((4, 4), np.int64)
    gt[0:2, 0:2] = 1
    # image 1 perfect (TP 1), image 2 nothing predicted (FN 1) -> 1/2; dicts accepted
    preds = [{"instances": gt}, {"instances": np.zeros_like(gt)}]
    assert matching_accuracy(preds, [gt, gt]) == pytest.approx(0.5)
    with pytest.raises(DataError, match="1 predicted maps for 2"):
        matching_accuracy([gt], [gt, gt])


@pytest.mark.parametrize("seed", range(4))
def test_ari_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 4, (16, 16))
    pred = np.where(rng.random((16, 16)) < 0.3, rng.integers(0, 6, (16, 16)), gt * 3)
    expected = adjusted_rand_score(gt.ravel(), pred.ravel())
    assert adjusted_rand_index(pred, gt) == pytest.approx(expected, abs=1e-12)


def test_ari_averages_images_and_handles_trivial_partitions():
    gt = np.zeros((4, 4), np.int64)
    gt[:2] = 1
    other = np.zeros((4, 4), np.int64)
    other[:, :2] = 5
    # image 1 identical (1.0); image 2 the crossing split: sklearn gives the value
    expected = (1.0 + adjusted_rand_score(gt.ravel(), other.ravel())) / 2
    assert adjusted_rand_index([gt, other], [gt, gt]) == pytest.approx(expected)
    # one cluster on both sides: identical partitions -> 1.0, as scikit-learn
    assert adjusted_rand_index(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
