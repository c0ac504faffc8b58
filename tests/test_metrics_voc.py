"""VOC AP^r: hand-built cases and agreement with an independent all-point implementation."""
import numpy as np
import pytest

from labkit.metrics import precision_recall_curve, voc_ap_r

A, B = (0, 10, 0, 10), (0, 10, 20, 30)  # 100-pixel squares


def boxes(*bs, shape=(32, 32)):
    out = np.zeros(shape, np.int64)
    for k, (y0, y1, x0, x1) in enumerate(bs, start=1):
        out[y0:y1, x0:x1] = k
    return out


def entry(instances, scores=None, classes=None):
    ids = np.unique(instances)
    ids = ids[ids > 0]
    out = {"instances": instances, "ids": ids,
           "classes": np.ones(len(ids), np.int64) if classes is None else np.asarray(classes)}
    if scores is not None:
        out["scores"] = np.asarray(scores, float)
    return out


def test_keys_and_perfect_prediction():
    truth = boxes(A, B)
    result = voc_ap_r([entry(truth, [0.9, 0.8])], [entry(truth)])
    assert set(result) == {"ap_r@0.5", "ap_r@0.6", "ap_r@0.7", "ap_r@0.8", "ap_r@0.9", "ap_r_mean"}
    assert all(v == pytest.approx(1.0) for v in result.values())


def test_one_miss_and_ranked_false_positive():
    truth = boxes(A, B)
    # one of two found, precision 1: all-point AP = 0.5 * 1
    assert voc_ap_r([entry(boxes(A), [0.9])], [entry(truth)])["ap_r_mean"] == pytest.approx(0.5)
    # false positive (0.95) above the only hit (0.9): recall 1 at precision 1/2 -> 0.5
    fp_first = entry(boxes(A, (20, 30, 0, 10)), [0.9, 0.95])
    assert voc_ap_r([fp_first], [entry(boxes(A))])["ap_r@0.5"] == pytest.approx(0.5)


def test_duplicate_and_per_threshold_hits():
    # A (0.9), a 62-px part of B (0.8): IoU 0.62 is a hit at T = 0.5, 0.6 and a false positive above.
    truth = boxes(A, B)
    found = boxes(A)
    found[0:6, 20:30] = 2
    found[6, 20:22] = 2
    result = voc_ap_r([entry(found, [0.9, 0.8])], [entry(truth)])
    assert result["ap_r@0.5"] == result["ap_r@0.6"] == pytest.approx(1.0)
    # above 0.6: hit, false positive -> recall 0.5 at precision 1 -> 0.5
    assert result["ap_r@0.7"] == result["ap_r@0.9"] == pytest.approx(0.5)
    assert result["ap_r_mean"] == pytest.approx((1 + 1 + 0.5 + 0.5 + 0.5) / 5)
    # an exact duplicate of A (overlapping masks) after both hits: TP, TP, FP -> AP 1;
    # between them: TP, FP, TP -> precision 1, 1/2, 2/3 at recall .5, .5, 1 -> .5 * 1 + .5 * 2/3
    masks = np.stack([truth == 1, truth == 1, truth == 2])
    dup = {"instances": np.zeros_like(truth), "ids": np.array([1, 2, 3]), "classes": np.ones(3, np.int64),
           "scores": np.array([0.9, 0.8, 0.7]), "masks": masks}
    assert voc_ap_r([dup], [entry(truth)])["ap_r@0.5"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_precision_recall_curve_class_agnostic_over_images():
    # image 1: hit 0.9, false positive 0.95; image 2: hit 0.5 of class 2 (classes ignored); 3 ground truths
    one = entry(boxes(A, (20, 30, 0, 10)), [0.9, 0.95])
    two = entry(boxes(B), [0.5], classes=[2])
    precision, recall = precision_recall_curve([one, two], [entry(boxes(A, B)), entry(boxes(B))])
    assert precision == pytest.approx([0, 1 / 2, 2 / 3]) and recall == pytest.approx([0, 1 / 3, 2 / 3])
    empty = precision_recall_curve([entry(boxes())], [entry(boxes())])
    assert len(empty[0]) == len(empty[1]) == 0


def test_per_class_then_mean_over_classes():
    # class 1 (A) found, class 2 (B) found but labelled 1 -> class 1: TP then FP (AP 1), class 2: AP 0
    truth = boxes(A, B)
    result = voc_ap_r([entry(truth, [0.9, 0.8], [1, 1])], [entry(truth, classes=[1, 2])], per_class=True)
    assert result["ap_r@0.5"] == pytest.approx(0.5)
    assert result["per_class"][1]["ap_r@0.5"] == pytest.approx(1.0)
    assert result["per_class"][2]["ap_r@0.5"] == pytest.approx(0.0)
    agnostic = voc_ap_r([entry(truth, [0.9, 0.8], [1, 1])], [entry(truth, classes=[1, 2])], class_agnostic=True)
    assert agnostic["ap_r@0.5"] == pytest.approx(1.0)


# ---------------------------------------------------------------- independent reference
def reference_ap_r(preds, gts, threshold):
    """Textbook VOC AP^r: per-pair IoU loops, a global ranked list per class, all-point AP."""
    classes = sorted({int(c) for g in gts for c in g["classes"]})
    aps = []
    for c in classes:
        dets, n_gt = [], 0
        for image, (p, g) in enumerate(zip(preds, gts)):
            gt_masks = [g["instances"] == i for i, k in zip(g["ids"], g["classes"]) if k == c]
            n_gt += len(gt_masks)
            for n, (s, k) in enumerate(zip(p["scores"], p["classes"])):
                if k == c:
                    dets.append((-s, image, n, gt_masks))
        taken = set()
        hits = []
        for _, image, n, gt_masks in sorted(dets, key=lambda d: (d[0], d[1], d[2])):
            mask = preds[image]["masks"][n]
            ious = [(mask & g).sum() / (mask | g).sum() for g in gt_masks]
            best = int(np.argmax(ious)) if ious else -1
            hit = best >= 0 and ious[best] >= threshold and (image, best) not in taken
            if hit:
                taken.add((image, best))
            hits.append(hit)
        tp = np.cumsum(hits)
        recall = tp / n_gt
        precision = tp / np.arange(1, len(hits) + 1)
        ap, previous = 0.0, 0.0
        for r in np.unique(recall):  # interpolated precision at each distinct recall level
            if r > previous:
                ap += (r - previous) * precision[recall >= r].max()
                previous = r
        aps.append(ap)
    return float(np.mean(aps))


def random_scene(rng, size=24):
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.int64)
    for k in range(1, 6):
        cy, cx, r = rng.integers(3, size - 3, 2).tolist() + [rng.integers(2, 6)]
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    ids = np.unique(truth)[1:]
    gt = {"instances": truth, "ids": ids, "classes": rng.integers(1, 3, len(ids))}
    masks, classes = [], []
    for _ in range(rng.integers(0, 5)):  # overlapping proposals: random discs
        cy, cx, r = rng.integers(3, size - 3, 2).tolist() + [rng.integers(2, 6)]
        masks.append((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
        classes.append(rng.integers(1, 3))
    for i, c in zip(ids, gt["classes"]):  # and shifted copies of ground truth, some twice
        for _ in range(rng.choice([0, 1, 1, 2])):
            masks.append(np.roll(truth == i, tuple(rng.integers(-1, 2, 2)), axis=(0, 1)))
            classes.append(c)
    n = len(masks)
    pred = {"instances": np.zeros_like(truth), "ids": np.arange(1, n + 1), "classes": np.array(classes, np.int64),
            "scores": rng.random(n), "masks": np.array(masks, bool).reshape(n, size, size)}
    return pred, gt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_independent_all_point_interpolation(seed):
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(6)]
    preds, gts = [p for p, _ in scenes], [g for _, g in scenes]
    result = voc_ap_r(preds, gts)
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        assert result[f"ap_r@{t:g}"] == pytest.approx(reference_ap_r(preds, gts, t), abs=1e-12)
