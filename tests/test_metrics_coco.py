"""COCO mask AP on hand-built scenes; expected values worked out by hand in the comments.

COCOeval interpolates precision at 101 recall points r = 0, 0.01, ..., 1 and
takes, at each, the best precision reached at recall >= r (0 if never reached).
"""
import numpy as np
import pytest
import torch

from labkit.errors import LabkitError
from labkit.metrics import coco_mask_ap


def square(shape=(32, 32), *boxes):
    """A map with object k+1 on box k = (y0, y1, x0, x1)."""
    out = np.zeros(shape, np.int64)
    for k, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        out[y0:y1, x0:x1] = k
    return out


A, B, C = (0, 10, 0, 10), (0, 10, 20, 30), (20, 30, 0, 10)  # 100-pixel squares, disjoint


def pred(instances, scores, classes=None):
    ids = np.unique(instances)
    ids = ids[ids > 0]
    return {
        "instances": instances,
        "ids": ids,
        "classes": np.ones(len(ids), np.int64) if classes is None else np.asarray(classes),
        "scores": np.asarray(scores, float),
    }


def gt(instances, classes=None, semantic=None):
    out = pred(instances, np.ones(len(np.unique(instances)) - 1), classes)
    del out["scores"]
    if semantic is not None:
        out["semantic"] = semantic
    return out


def test_perfect_prediction_scores_one():
    truth = square((32, 32), A, B)
    result = coco_mask_ap([pred(truth, [0.9, 0.8])], [gt(truth)])
    assert result["ap"] == result["ap50"] == result["ap75"] == pytest.approx(1.0)
    assert result["ap_s"] == pytest.approx(1.0)  # 100 px < 32^2: both objects are "small"
    assert result["ap_m"] == result["ap_l"] == 0.0  # no medium/large ground truth: documented 0.0


def test_one_missed_object():
    # 2 objects, 1 found with precision 1: recall 0.5 -> precision 1 at r = 0 .. 0.50 (51 of 101 points)
    truth = square((32, 32), A, B)
    result = coco_mask_ap([pred(square((32, 32), A), [0.9])], [gt(truth)])
    assert result["ap"] == pytest.approx(51 / 101)
    assert result["ap50"] == pytest.approx(51 / 101)


def test_false_positive_below_the_hit_costs_nothing():
    # ranking: hit (0.9) then false positive (0.8): precision 1 up to recall 1 -> AP 1
    result = coco_mask_ap([pred(square((32, 32), A, C), [0.9, 0.8])], [gt(square((32, 32), A))])
    assert result["ap"] == pytest.approx(1.0)


def test_false_positive_above_the_hit_halves_ap():
    # ranking: false positive (0.95) then hit (0.9): recall 1 reached at precision 1/2 -> AP 0.5
    result = coco_mask_ap([pred(square((32, 32), A, C), [0.9, 0.95])], [gt(square((32, 32), A))])
    assert result["ap"] == pytest.approx(0.5)


def test_duplicate_detection_is_a_false_positive():
    # overlapping proposals (masks): A (0.9), A again (0.8), B (0.7) against A, B:
    # hits TP, FP, TP -> recall .5, .5, 1 with precision 1, 1/2, 2/3;
    # r = 0..0.50 -> 1 (51 points), r = 0.51..1 -> 2/3 (50 points): AP = (51 + 50 * 2/3) / 101
    truth = square((32, 32), A, B)
    masks = np.stack([truth == 1, truth == 1, truth == 2])
    prediction = {
        "instances": np.zeros((32, 32), np.int64),
        "ids": np.array([1, 2, 3]),
        "classes": np.ones(3, np.int64),
        "scores": np.array([0.9, 0.8, 0.7]),
        "masks": masks,
    }
    result = coco_mask_ap([prediction], [gt(truth)])
    assert result["ap"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_score_ordering_decides_ap_at_strict_thresholds():
    # A found exactly; B found by a 62-pixel subset (IoU 0.62): a hit at IoU 0.50, 0.55, 0.60, a miss above.
    truth = square((32, 32), A, B)
    found = truth.copy()
    found[6:10, 20:30] = 0  # keeps rows 0..5 of B: 60 px
    found[6, 20:22] = 2  # + 2 px = 62 px
    assert (found == 2).sum() == 62
    # A ranked first: thresholds >= .65 give precision 1 up to recall .5 -> 51/101 each
    good = coco_mask_ap([pred(found, [0.9, 0.2])], [gt(truth)])
    assert good["ap50"] == pytest.approx(1.0)
    assert good["ap75"] == pytest.approx(51 / 101)
    assert good["ap"] == pytest.approx((3 * 1.0 + 7 * 51 / 101) / 10)
    # the poor mask ranked first: above .6 it is a false positive before the hit -> precision 1/2
    bad = coco_mask_ap([pred(found, [0.2, 0.9])], [gt(truth)])
    assert bad["ap50"] == pytest.approx(1.0)
    assert bad["ap75"] == pytest.approx(25.5 / 101)
    assert bad["ap"] == pytest.approx((3 * 1.0 + 7 * 25.5 / 101) / 10)


def test_max_dets_keeps_the_top_scores():
    # 3 exact hits, only the best 2 kept: recall 2/3 at precision 1 -> r = 0..0.66 (67 points)
    truth = square((32, 32), A, B, C)
    result = coco_mask_ap([pred(truth, [0.9, 0.8, 0.7])], [gt(truth)], max_dets=2)
    assert result["ap"] == pytest.approx(67 / 101)
    assert coco_mask_ap([pred(truth, [0.9, 0.8, 0.7])], [gt(truth)], max_dets=3)["ap"] == pytest.approx(1)
    with pytest.raises(LabkitError, match="max_dets"):
        coco_mask_ap([pred(truth, [0.9, 0.8, 0.7])], [gt(truth)], max_dets=0)


def test_detection_inside_void_is_ignored():
    # a detection lying entirely in semantic-255 pixels, ranked above the hit:
    # ignored (crowd region) -> AP 1; counted -> AP 0.5 as in the false-positive case
    truth = square((32, 32), A)
    semantic = np.where(truth > 0, 1, 0)
    semantic[20:30, 0:10] = 255
    prediction = pred(square((32, 32), A, C), [0.9, 0.95])
    assert coco_mask_ap([prediction], [gt(truth, semantic=semantic)])["ap"] == pytest.approx(1.0)
    kept = coco_mask_ap([prediction], [gt(truth, semantic=semantic)], ignore_void=False)
    assert kept["ap"] == pytest.approx(0.5)


def test_classes_are_scored_separately_and_averaged():
    # A is class 1, B class 2; both found but B labelled 1. Class 1: hit then a false positive -> 1;
    # class 2: nothing found -> 0. Mean 0.5. Ignoring classes: both hits -> 1.
    truth = square((32, 32), A, B)
    prediction = pred(truth, [0.9, 0.8], classes=[1, 1])
    result = coco_mask_ap([prediction], [gt(truth, classes=[1, 2])], per_class=True)
    assert result["ap"] == pytest.approx(0.5)
    assert result["per_class"][1]["ap"] == pytest.approx(1.0)
    assert result["per_class"][2]["ap"] == pytest.approx(0.0)
    agnostic = coco_mask_ap([prediction], [gt(truth, classes=[1, 2])], class_agnostic=True)
    assert agnostic["ap"] == pytest.approx(1.0)


def test_accepts_torch_tensors_and_pools_images():
    # image 1: perfect (1 object); image 2: 1 object missed. Pooled: 2 objects, 1 hit at precision 1
    # -> 51/101, same as a single image with one miss.
    one = square((16, 16), (0, 8, 0, 8))
    p1 = {k: torch.as_tensor(v) for k, v in pred(one, [0.9]).items()}
    empty = {k: torch.as_tensor(v) for k, v in pred(np.zeros((16, 16), np.int64), []).items()}
    result = coco_mask_ap([p1, empty], [gt(one), gt(one)])
    assert result["ap"] == pytest.approx(51 / 101)


def test_agrees_with_the_usual_pycocotools_pipeline():
    """Random scenes scored by labkit and by the textbook route (loadRes + COCOeval.summarize)."""
    import contextlib
    import io

    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    preds, gts, images, gt_anns, results = [], [], [], [], []
    for image_id in range(1, 7):
        truth = np.zeros((64, 64), np.int64)
        for k in range(1, 8):
            cy, cx, r = rng.integers(5, 59), rng.integers(5, 59), rng.integers(2, 28)
            truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
        ids = np.unique(truth)[1:]
        classes = rng.integers(1, 3, len(ids))
        guess = np.roll(truth, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
        guess[rng.random((64, 64)) < 0.02] = 0
        pids = np.unique(guess)[1:]
        scores = rng.random(len(pids))
        pclasses = np.where(rng.random(len(pids)) < 0.8, classes[np.searchsorted(ids, pids)], 3 - classes[0])
        gts.append({"instances": truth, "ids": ids, "classes": classes})
        preds.append({"instances": guess, "ids": pids, "classes": pclasses, "scores": scores})
        images.append({"id": image_id, "height": 64, "width": 64})
        for i, c in zip(ids, classes):
            rle = mask_util.encode(np.asfortranarray((truth == i).astype(np.uint8)))
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id, "category_id": int(c), "iscrowd": 0,
                            "segmentation": rle, "area": float(mask_util.area(rle))})
        for i, c, s in zip(pids, pclasses, scores):
            rle = mask_util.encode(np.asfortranarray((guess == i).astype(np.uint8)))
            results.append({"image_id": image_id, "category_id": int(c), "segmentation": rle, "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns,
                           "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = [max(v, 0.0) for v in evaluator.stats[:6]]  # -1 (no such ground truth) -> 0.0
    ours = coco_mask_ap(preds, gts)
    assert 0.1 < ours["ap"] < 0.9 and ours["ap_s"] > 0 and ours["ap_m"] > 0  # no large object fits in 64x64
    assert [ours[k] for k in ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")] == pytest.approx(expected, abs=1e-12)


def test_hundreds_of_predicted_fragments_in_one_image():
    # 900 one-pixel fragments (an untrained model's output) besides a perfect hit on A, scored
    # lowest: pycocotools' own mask.area overflows at 256 masks, the areas must not come from it.
    fragments = np.zeros((64, 64), np.int64)
    fragments[:10, :10] = 1
    ys, xs = np.nonzero(fragments == 0)
    fragments[ys[:900], xs[:900]] = np.arange(2, 902)
    scores = [1.0] + [0.1] * 900
    truth = gt(square((64, 64), A))
    out = coco_mask_ap([pred(fragments, scores)], [truth], max_dets=1000)
    # the hit ranks first: precision 1 at every recall level, fragments never match (IoU 0.01)
    assert out["ap50"] == pytest.approx(1.0)
