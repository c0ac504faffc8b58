"""Reading predictions: relabelling, overlaps, and errors that name the offending image and value."""
import numpy as np
import pytest

from labkit.errors import DataError
from labkit.metrics import voc_ap_r
from labkit.metrics.inputs import LOOKUP_LIMIT, index_map, overlaps, read_entry, read_pairs


def test_index_map_small_and_huge_ids_agree():
    small = np.array([[0, 5, 5], [9, 0, 5]])
    assert index_map(small, np.array([9, 5])).tolist() == [[0, 2, 2], [1, 0, 2]]
    huge = np.where(small > 0, small + LOOKUP_LIMIT, 0)  # the binary-search path
    assert index_map(huge, np.array([9, 5]) + LOOKUP_LIMIT).tolist() == [[0, 2, 2], [1, 0, 2]]


def test_overlaps_of_a_map_and_of_masks_agree():
    gt = read_entry({"instances": np.array([[1, 1, 0, 2], [1, 1, 0, 2]])}, "gt")
    pred_map = np.array([[3, 3, 3, 0], [0, 0, 0, 4]])
    # segment 3 (3 px): 2 px of gt 1 (4 px) -> IoU 2/5; segment 4 (1 px) in gt 2 (2 px) -> 1/2
    expected = [[2 / 5, 0], [0, 1 / 2]]
    assert overlaps(read_entry({"instances": pred_map}, "p"), gt) == pytest.approx(np.array(expected))
    masks = np.stack([pred_map == 3, pred_map == 4])
    with_masks = read_entry({"instances": np.zeros_like(pred_map), "ids": [3, 4], "masks": masks}, "p")
    assert overlaps(with_masks, gt) == pytest.approx(np.array(expected))


@pytest.mark.parametrize(
    "prediction, message",
    [
        ({"instances": np.array([[1, 2]]), "ids": [1]}, r"prediction 0: map has ids \[2\] not listed"),
        ({"instances": np.array([[1, 1]]), "ids": [1, 1]}, "duplicates"),
        ({"instances": np.array([[0, 1]]), "ids": [0, 1]}, "must be positive"),
        ({"instances": np.array([[-1, 1]]), "ids": [1]}, "negative ids"),
        ({"instances": np.array([[1, 0]]), "ids": [1], "scores": [0.5, 0.2]}, "2 scores for 1 ids"),
        ({"instances": np.zeros((2, 2), int)}, r"image 0: prediction size \(2, 2\) != ground truth size \(1, 2\)"),
        ({"ids": [1]}, "no 'instances' map"),
    ],
)
def test_bad_predictions_are_reported(prediction, message):
    with pytest.raises(DataError, match=message):
        read_pairs([prediction], [{"instances": np.array([[1, 0]])}])


def test_length_mismatch_is_reported_by_every_metric():
    with pytest.raises(DataError, match="1 predictions for 2 ground truths"):
        voc_ap_r([{"instances": np.zeros((2, 2), int)}], [{"instances": np.zeros((2, 2), int)}] * 2)


def test_ground_truth_without_classes_takes_them_from_its_semantic_map():
    """DESIGN.md data contract: an instance's class is the semantic value under it (not class 1)."""
    inst = np.array([[1, 1, 0, 2], [1, 1, 0, 2], [3, 3, 0, 0]])
    sem = np.array([[2, 2, 0, 3], [2, 255, 0, 3], [2, 3, 0, 0]])  # instance 3: a 2-3 tie -> 2
    gt = read_entry({"instances": inst, "semantic": sem}, "gt")
    assert gt.classes.tolist() == [2, 3, 2]
    ignored = read_entry({"instances": inst, "semantic": np.full_like(sem, 255)}, "gt")
    assert ignored.classes.tolist() == [1, 1, 1]  # nothing but ignore under them: class-agnostic 1
    # permuting ids permutes nothing of the classes' meaning
    permuted = read_entry({"instances": np.choose(inst, [0, 7, 4, 9]), "semantic": sem}, "gt")
    assert dict(zip(permuted.ids.tolist(), permuted.classes.tolist())) == {4: 3, 7: 2, 9: 2}
    # explicit classes still win
    assert read_entry({"instances": inst, "semantic": sem, "classes": [5, 5, 5]}, "gt").classes.tolist() == [5, 5, 5]
    with pytest.raises(DataError, match="negative classes"):
        read_entry({"instances": inst, "semantic": -sem}, "gt")


def test_per_class_ap_scores_the_semantic_class_of_a_ground_truth_without_classes():
    """A correct class-2 prediction is a hit only when the ground truth's class comes from its semantic map."""
    inst = np.zeros((8, 8), dtype=np.int64)
    inst[1:4, 1:4], inst[5:8, 5:8] = 1, 2
    sem = np.where(inst == 1, 2, np.where(inst == 2, 3, 0))
    pred = {"instances": inst, "ids": [1, 2], "classes": [2, 3], "scores": [0.9, 0.8]}
    from labkit.metrics import coco_mask_ap

    assert coco_mask_ap([pred], [{"instances": inst, "semantic": sem}])["ap50"] == pytest.approx(1.0)
    assert coco_mask_ap([pred], [{"instances": inst}])["ap50"] == pytest.approx(0.0)  # class 1 matches nothing


def test_evaluate_counts_classes_from_the_semantic_map():
    from labkit.evaluation import evaluate_predictions

    inst = np.zeros((8, 8), dtype=np.int64)
    inst[1:4, 1:4], inst[5:8, 5:8] = 1, 2
    sem = np.where(inst == 1, 2, np.where(inst == 2, 3, 0))
    pred = {"instances": inst, "ids": [1, 2], "classes": [2, 3], "scores": [0.9, 0.8]}
    out = evaluate_predictions([pred], [{"instances": inst, "semantic": sem}])
    assert out["ap50"] == pytest.approx(1.0)
    assert {row["n_gt"] for row in out["per_class"].values()} == {1}
    assert sorted(out["per_class"]) == ["2", "3"]
