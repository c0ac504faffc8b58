"""Mean IoU and pixel accuracy from one pooled confusion matrix."""
import numpy as np
import pytest

from labkit.metrics import mean_iou


def test_hand_computed_miou_with_ignore():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    # valid pixels: 7 (the 255 is ignored). class 0: TP 3, FN 1 -> 3/4; class 1: TP 3, FP 1 -> 3/4;
    # class 2: predicted only on the ignored pixel -> absent (None), left out of the mean
    result = mean_iou([pred], [gt], num_classes=3)
    assert result["iou"] == [pytest.approx(0.75), pytest.approx(0.75), None]
    assert result["miou"] == pytest.approx(0.75)
    assert result["pixel_accuracy"] == pytest.approx(6 / 7)


def test_pooled_over_images_and_out_of_range_predictions_are_wrong():
    gt = np.ones((2, 2), np.int64)
    # image 1 all right (4 px class 1), image 2 predicts 7, outside 0..1: 4 wrong -> IoU_1 = 4/8
    result = mean_iou([np.ones((2, 2)), np.full((2, 2), 7)], [gt, gt], num_classes=2)
    assert result["iou"] == [None, pytest.approx(0.5)]
    assert result["pixel_accuracy"] == pytest.approx(0.5)
