"""Every metric: unchanged by permuting instance ids; 0 (or its documented value) on empty input, silently."""
import warnings

import numpy as np
import pytest
import torch

from labkit.metrics import (
    adjusted_rand_index,
    average_recall,
    coco_mask_ap,
    matching_accuracy,
    mean_iou,
    panoptic_quality,
    voc_ap_r,
)


def scene(rng, size=24):
    """Ground truth with 2 thing classes, stuff class 3 and void; a jittered prediction with distinct scores."""
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((size, size), np.int64)
    sem = np.zeros((size, size), np.int64)
    sem[-4:] = 3
    sem[-6:-4, :5] = 255
    classes = rng.integers(1, 3, 6)
    for k in range(6):
        cy, cx, r = rng.integers(3, size - 7), rng.integers(3, size - 3), rng.integers(2, 5)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        inst[disc], sem[disc] = k + 1, classes[k]
    ids = np.unique(inst)[1:]
    gt = {"instances": inst, "ids": ids, "classes": classes[ids - 1], "semantic": sem}
    pinst = np.zeros_like(inst)
    for i in ids:
        pinst[np.roll(inst == i, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))] = i
    pinst[0:3, 0:3] = 50  # a spurious object
    pids = np.unique(pinst)[1:]
    lookup = dict(zip(ids.tolist(), classes[ids - 1].tolist())) | {50: 1}
    psem = np.where(sem == 255, 0, sem)
    pred = {"instances": pinst, "ids": pids, "classes": np.array([lookup[i] for i in pids.tolist()]),
            "scores": rng.permutation(len(pids)) / len(pids) + 0.01, "semantic": psem}
    return pred, gt


def permuted(item, rng):
    """Same segmentation, ids renamed to random large values and listed in a random order."""
    item = dict(item)
    ids = np.asarray(item["ids"])
    new = rng.choice(np.arange(1000, 5000), len(ids), replace=False)
    lut = np.zeros(int(item["instances"].max()) + 1, np.int64)
    lut[ids] = new
    item["instances"] = lut[item["instances"]]
    order = rng.permutation(len(ids))
    item["ids"] = new[order]
    for key in ("classes", "scores"):
        if key in item:
            item[key] = np.asarray(item[key])[order]
    return item


def all_metrics(preds, gts):
    maps_p, maps_g = [p["instances"] for p in preds], [g["instances"] for g in gts]
    return (
        coco_mask_ap(preds, gts, per_class=True)
        | voc_ap_r(preds, gts)
        | average_recall(preds, gts)
        | {f"{k}_panoptic": v for k, v in panoptic_quality(preds, gts, [1, 2], [3]).items()}
        | {"matching_accuracy": matching_accuracy(maps_p, maps_g), "ari": adjusted_rand_index(maps_p, maps_g)}
        | mean_iou([p["semantic"] for p in preds], [g["semantic"] for g in gts])
    )


def test_every_metric_is_invariant_to_id_permutation():
    rng = np.random.default_rng(0)
    scenes = [scene(rng) for _ in range(5)]
    preds, gts = [p for p, _ in scenes], [g for _, g in scenes]
    before = all_metrics(preds, gts)
    assert 0.2 < before["ap50"] < 1 and 0.2 < before["pq_panoptic"] < 1  # a non-trivial case
    after = all_metrics([permuted(p, rng) for p in preds], [permuted(g, rng) for g in gts])
    assert after.keys() == before.keys()
    for key, value in before.items():
        if key == "per_class":
            for c, row in value.items():
                assert after[key][c] == pytest.approx(row, abs=1e-12), c
        else:
            assert after[key] == pytest.approx(value, abs=1e-12), key


def empty(shape=(8, 8)):
    return {"instances": np.zeros(shape, np.int64), "ids": np.zeros(0, np.int64),
            "classes": np.zeros(0, np.int64), "scores": np.zeros(0), "semantic": np.zeros(shape, np.int64)}


def one_object(shape=(8, 8)):
    inst = np.zeros(shape, np.int64)
    inst[2:6, 2:6] = 1
    return {"instances": inst, "ids": np.array([1]), "classes": np.array([1]), "scores": np.array([0.5]),
            "semantic": inst.copy()}


@pytest.mark.parametrize(
    "preds, gts",
    [
        ([empty()], [one_object()]),  # nothing predicted
        ([one_object()], [empty()]),  # nothing to find
        ([empty()], [empty()]),  # nothing at all
        ([], []),  # no images
    ],
    ids=["empty-prediction", "empty-ground-truth", "both-empty", "no-images"],
)
def test_empty_inputs_give_zero_without_warnings(preds, gts):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = all_metrics(preds, gts)
    documented_one = {"ari"}  # identical trivial partitions: 1.0, as scikit-learn
    for key, value in results.items():
        if key == "per_class":
            assert all(v == 0.0 for row in value.values() for v in row.values())
        elif key == "iou":
            assert all(v is None or 0 <= v <= 1 for v in value)
        elif key in documented_one and len(preds) and not len(preds[0]["ids"]) and not len(gts[0]["ids"]):
            assert value == 1.0
        elif key in ("ari", "miou", "pixel_accuracy"):
            assert 0.0 <= value <= 1.0  # pixel-level scores: background is still scored
        else:
            assert value == 0.0, key


def test_tensor_inputs_on_any_dtype_agree_with_numpy():
    rng = np.random.default_rng(3)
    pred, gt = scene(rng)
    as_torch = lambda d: {k: torch.as_tensor(v) for k, v in d.items()}  # noqa: E731
    assert all_metrics([as_torch(pred)], [as_torch(gt)]) == all_metrics([pred], [gt])
