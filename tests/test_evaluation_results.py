"""evaluate_predictions: which keys appear for which data, JSON-readiness, and the printed table."""
import json
import warnings

import pytest
import torch

from labkit.errors import LabkitError
from labkit.evaluation import evaluate_predictions, format_table

INSTANCE_KEYS = {"n_images", "n_instances", "n_predicted", "ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l",
                 "ap_r@0.5", "ap_r@0.6", "ap_r@0.7", "ap_r@0.8", "ap_r@0.9", "ap_r_mean",
                 "ar@10", "ar50@10", "ar@60", "ar50@60", "matching_accuracy", "ari"}


def two_objects(classes=(1, 1)):
    inst = torch.zeros(16, 16, dtype=torch.int64)
    inst[0:6, 0:6], inst[8:14, 8:14] = 4, 9
    sem = torch.zeros(16, 16, dtype=torch.int64)
    sem[inst == 4], sem[inst == 9] = classes
    sem[15, :] = 3  # a stuff strip
    gt = {"instances": inst, "ids": torch.tensor([4, 9]), "classes": torch.tensor(classes), "semantic": sem}
    pred = {"instances": inst.clone(), "ids": torch.tensor([4, 9]), "classes": torch.tensor(classes),
            "scores": torch.tensor([0.9, 0.8])}
    return pred, gt


def test_class_agnostic_perfect_prediction():
    pred, gt = two_objects()
    del gt["semantic"]
    results = evaluate_predictions([pred, pred], [gt, gt])
    assert set(results) == INSTANCE_KEYS  # no per-class rows, no panoptic keys
    assert results["n_images"] == 2 and results["n_instances"] == 4 and results["n_predicted"] == 4
    for key in ("ap", "ap50", "ap75", "ap_r_mean", "ar@10", "ar50@60", "matching_accuracy", "ari"):
        assert results[key] == pytest.approx(1.0), key
    json.dumps(results, allow_nan=False)  # strict JSON: no NaN anywhere


def test_classes_give_named_rows_and_panoptic_keys_when_predictions_have_semantic():
    pred, gt = two_objects(classes=(1, 2))
    names = ["background", "cat", "dog", "grass"]
    plain = evaluate_predictions([pred], [gt], class_names=names, stuff=[3])
    assert "pq" not in plain  # predictions without a semantic map: no panoptic quality
    assert set(plain["per_class"]) == {"cat", "dog"}
    assert plain["per_class"]["cat"]["n_gt"] == 1
    pred["semantic"] = gt["semantic"].clone()
    results = evaluate_predictions([pred], [gt], class_names=names, stuff=[3])
    assert results["pq"] == results["pq_things"] == results["pq_stuff"] == pytest.approx(1.0)
    assert set(results["per_class"]) == {"cat", "dog", "grass"}
    assert results["per_class"]["grass"]["pq"] == pytest.approx(1.0)
    assert results["per_class"]["dog"]["ap"] == pytest.approx(1.0)
    json.dumps(results, allow_nan=False)


def test_wrong_class_is_a_miss_when_the_data_has_classes():
    pred, gt = two_objects(classes=(1, 2))
    pred["classes"] = torch.tensor([1, 1])
    results = evaluate_predictions([pred], [gt], class_names=["background", "cat", "dog"])
    # cat: hit then a false positive -> 1; dog: nothing found -> 0; mean 0.5 (COCO and VOC alike)
    assert results["ap50"] == pytest.approx(0.5)
    assert results["ap_r@0.5"] == pytest.approx(0.5)
    assert results["per_class"]["dog"]["ap50"] == 0.0
    # the class-agnostic scores do not look at classes
    assert results["matching_accuracy"] == pytest.approx(1.0)


def test_semantic_task():
    pred, gt = two_objects(classes=(1, 2))
    pred = {"semantic": gt["semantic"].clone(), "instances": torch.zeros(16, 16, dtype=torch.int64),
            "ids": torch.zeros(0, dtype=torch.int64), "classes": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0)}
    pred["semantic"][0:6, 0:6] = 0  # cat (36 px) predicted as background
    results = evaluate_predictions([pred], [gt], class_names=["bg", "cat", "dog", "grass"], task="semantic")
    # cat IoU 0; background: 256-36-36-16 = 168 px right + 36 wrongly claimed -> 168/204; dog, grass 1
    assert results["per_class"]["cat"]["iou"] == 0.0
    assert results["per_class"]["bg"]["iou"] == pytest.approx(168 / 204)
    assert results["miou"] == pytest.approx((168 / 204 + 0 + 1 + 1) / 4)
    assert results["pixel_accuracy"] == pytest.approx(220 / 256)
    # no instances predicted: the instance scores are there, and zero
    assert results["ap50"] == 0.0 and results["n_predicted"] == 0
    with pytest.raises(LabkitError, match="unknown task"):
        evaluate_predictions([pred], [gt], task="depth")


def test_no_images_is_all_zeros_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = evaluate_predictions([], [])
        with_classes = evaluate_predictions([], [], class_names=["bg", "cat", "dog"])
    assert results["n_images"] == 0
    assert all(v == 0 for k, v in results.items())
    assert with_classes["per_class"] == {} and with_classes["ap"] == 0


def test_missing_ground_truth_is_reported():
    pred, gt = two_objects()
    with pytest.raises(LabkitError, match=r"images \[1\] have no ground-truth"):
        evaluate_predictions([pred, pred], [gt, None])


def test_format_table_is_aligned_and_complete():
    pred, gt = two_objects(classes=(1, 2))
    results = evaluate_predictions([pred], [gt], class_names=["background", "cat", "dog"])
    table = format_table(results)
    lines = table.splitlines()
    value_column = lines[0].index("value")
    for key in ("ap", "ap_r_mean", "matching_accuracy"):
        line = next(line for line in lines if line.split()[0] == key)
        assert line.index(line.split()[1]) == value_column  # values line up
    assert "1.000" in table and "cat" in table and "dog" in table and "n_gt" in table
    header = next(line for line in lines if line.startswith("class"))
    row = next(line for line in lines if line.startswith("dog"))
    assert len(row) == len(header)
