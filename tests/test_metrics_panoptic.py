"""Panoptic quality on a hand-built 12x12 scene with a stuff class and void pixels."""
import numpy as np
import pytest

from labkit.errors import LabkitError
from labkit.metrics import panoptic_quality

THINGS, STUFF = [1], [2]


def scene():
    """Ground truth and prediction; every count is derived in the comments.

    Ground truth: things A = rows 0:4 x cols 0:4 (16 px), B = rows 0:4 x cols 6:10 (16 px), class 1;
    stuff (class 2) = rows 8:12 (48 px); void (255) = rows 6:8 x cols 0:6 (12 px); the rest background 0.
    """
    inst = np.zeros((12, 12), np.int64)
    inst[0:4, 0:4] = 7
    inst[0:4, 6:10] = 3
    sem = np.zeros((12, 12), np.int64)
    sem[inst > 0] = 1
    sem[8:12] = 2
    sem[6:8, 0:6] = 255
    gt = {"instances": inst, "ids": np.array([3, 7]), "classes": np.array([1, 1]), "semantic": sem}
    # Prediction: A' = rows 0:4 x cols 0:5 (20 px, IoU 16/20 = 0.8 with A);
    # B not found (false negative); C = rows 6:8 x cols 0:4 (8 px, all void: not a false positive);
    # D = rows 4:6 x cols 8:12 (8 px on background: false positive);
    # semantic class 2 on rows 7:12, minus C's 4 px on row 7 -> stuff segment of 56 px, 48 of them
    # on the ground-truth stuff and 2 (row 7, cols 4:6) void: IoU = 48 / (56 + 48 - 48 - 2) = 48/54.
    pinst = np.zeros((12, 12), np.int64)
    pinst[0:4, 0:5] = 1
    pinst[6:8, 0:4] = 2
    pinst[4:6, 8:12] = 5
    psem = np.zeros((12, 12), np.int64)
    psem[7:12] = 2
    pred = {"instances": pinst, "ids": np.array([1, 2, 5]), "classes": np.array([1, 1, 1]),
            "scores": np.array([0.9, 0.8, 0.7]), "semantic": psem}
    return pred, gt


def test_hand_computed_scene():
    pred, gt = scene()
    result = panoptic_quality([pred], [gt], THINGS, STUFF, per_class=True)
    # class 1: TP 1 (IoU .8), FP 1 (D), FN 1 (B): PQ = .8 / (1 + .5 + .5) = .4, SQ = .8, RQ = .5
    # class 2: TP 1 (IoU 48/54): PQ = SQ = 8/9, RQ = 1
    assert result["per_class"][1] == {"pq": pytest.approx(0.4), "sq": pytest.approx(0.8),
                                      "rq": pytest.approx(0.5), "tp": 1, "fp": 1, "fn": 1}
    assert result["per_class"][2]["pq"] == pytest.approx(8 / 9)
    assert result["pq"] == pytest.approx((0.4 + 8 / 9) / 2)
    assert result["sq"] == pytest.approx((0.8 + 8 / 9) / 2)
    assert result["rq"] == pytest.approx(0.75)
    assert result["pq_things"] == pytest.approx(0.4)
    assert result["pq_stuff"] == pytest.approx(8 / 9)
    assert result["rq_stuff"] == pytest.approx(1.0)


def test_void_rule_is_more_than_half():
    pred, gt = scene()
    # C moved to rows 6:8 x cols 4:8: 4 of its 8 px void (exactly half) -> now a false positive (class 1 FP 2)
    pred["instances"][pred["instances"] == 2] = 0
    pred["instances"][6:8, 4:8] = 2
    result = panoptic_quality([pred], [gt], THINGS, STUFF, per_class=True)
    assert result["per_class"][1]["fp"] == 2
    assert result["per_class"][1]["pq"] == pytest.approx(0.8 / (1 + 1 + 0.5))


def test_perfect_panoptic_prediction_and_void_excluded_from_union():
    pred, gt = scene()
    perfect = {"instances": gt["instances"], "ids": gt["ids"], "classes": gt["classes"],
               "scores": np.ones(2), "semantic": np.where(gt["semantic"] == 255, 2, gt["semantic"])}
    # the predicted stuff also covers the 12 void pixels; they are left out of the union -> IoU 1
    result = panoptic_quality([perfect], [gt], THINGS, STUFF)
    assert result["pq"] == result["sq"] == result["rq"] == pytest.approx(1.0)


def test_counts_pool_over_images_before_averaging():
    pred, gt = scene()
    empty_pred = {"instances": np.zeros((12, 12), np.int64), "ids": np.zeros(0, np.int64)}
    # second image: the same ground truth, nothing predicted -> class 1 FN +2, class 2 FN +1.
    # class 1: TP 1, FP 1, FN 3 -> .8 / 3; class 2: TP 1, FN 1 -> (8/9) / 1.5
    result = panoptic_quality([pred, empty_pred], [gt, gt], THINGS, STUFF)
    assert result["pq_things"] == pytest.approx(0.8 / 3)
    assert result["pq_stuff"] == pytest.approx((8 / 9) / 1.5)


def test_things_and_stuff_must_be_disjoint():
    pred, gt = scene()
    with pytest.raises(LabkitError, match="both thing and stuff"):
        panoptic_quality([pred], [gt], [1, 2], [2])
