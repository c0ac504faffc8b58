"""Average recall at k proposals, hand-computed."""
import numpy as np
import pytest

from labkit.metrics import average_recall


def test_recall_at_k_with_overlapping_proposals():
    # ground truth: A = rows 0:10 x cols 0:10, B = rows 0:10 x cols 20:30 (100 px each)
    truth = np.zeros((32, 32), np.int64)
    truth[0:10, 0:10] = 1
    truth[0:10, 20:30] = 2
    a = truth == 1
    b72 = np.zeros_like(a)
    b72[0:7, 20:30] = True
    b72[7, 20:22] = True  # 72 px inside B: IoU 0.72
    b96 = truth == 2
    b96[9, 26:30] = False  # 96 px inside B: IoU 0.96
    proposals = {"instances": np.zeros_like(truth), "ids": np.array([1, 2, 3]), "classes": np.ones(3, np.int64),
                 "scores": np.array([0.9, 0.8, 0.1]), "masks": np.stack([a, b72, b96])}
    result = average_recall([proposals], [{"instances": truth}], k=(1, 2, 3))
    # top 1: A recalled at every threshold, B never -> 0.5 everywhere
    assert result["ar@1"] == pytest.approx(0.5)
    assert result["ar50@1"] == pytest.approx(0.5)
    # top 2: B recalled at T = .50 .55 .60 .65 .70 (IoU .72), not at .75 ... .95:
    # recall = 1 on 5 thresholds, 0.5 on 5 -> 0.75
    assert result["ar@2"] == pytest.approx(0.75)
    assert result["ar50@2"] == pytest.approx(1.0)
    # top 3: B recalled at every threshold up to .95 (IoU .96)
    assert result["ar@3"] == pytest.approx(1.0)


def test_default_keys_and_pooling_over_images():
    # image 1: its one object recalled; image 2: two objects, none proposed -> 1 of 3 objects: 1/3
    one = np.zeros((8, 8), np.int64)
    one[0:4, 0:4] = 1
    two = np.zeros((8, 8), np.int64)
    two[0:4, 0:4], two[4:8, 4:8] = 1, 2
    preds = [{"instances": one, "scores": np.array([0.5])}, {"instances": np.zeros((8, 8), np.int64)}]
    result = average_recall(preds, [{"instances": one}, {"instances": two}])
    assert set(result) == {"ar@10", "ar50@10", "ar@60", "ar50@60"}
    assert result["ar@10"] == pytest.approx(1 / 3)
    assert result["ar50@60"] == pytest.approx(1 / 3)
