"""Time every labkit metric on 500 predicted 128x128 images (~10 instances each).

Target: the whole evaluation (``evaluate_predictions``) under 10 s on a CPU.
The reference, in the same process, is the textbook per-pair IoU loop
(one boolean intersection and union per predicted/ground-truth pair) on a
subset of the images; the script checks it gives the same IoUs as labkit's
single-``bincount`` overlap and prints the speed ratio.

    python benchmarks/bench_metrics.py [--images 500] [--size 128]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from labkit.evaluation import evaluate_predictions
from labkit.metrics import (
    adjusted_rand_index,
    average_recall,
    coco_mask_ap,
    matching_accuracy,
    panoptic_quality,
    voc_ap_r,
)
from labkit.metrics.inputs import overlaps, read_pairs

THINGS, STUFF = [1, 2, 3], [4]


def scene(rng: np.random.Generator, size: int) -> tuple[dict, dict]:
    """A ground truth of ~10 discs (3 classes, a stuff band, a void ring) and a noisy prediction."""
    yy, xx = np.mgrid[:size, :size]
    gt_inst = np.zeros((size, size), np.int64)
    semantic = np.zeros((size, size), np.int64)
    semantic[: size // 8] = 4  # stuff band
    classes = rng.integers(1, 4, 10)
    for k in range(10):
        cy, cx = rng.integers(size // 8 + 8, size - 8), rng.integers(8, size - 8)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(4, 12) ** 2
        gt_inst[disc] = k + 1
        semantic[disc] = classes[k]
    ring = np.abs(np.hypot(yy - size / 2, xx - size / 2) - size / 3) < 0.7
    semantic[ring & (gt_inst == 0)] = 255
    ids = np.unique(gt_inst)[1:]
    gt = {"instances": gt_inst, "ids": ids, "classes": classes[ids - 1], "semantic": semantic}

    # prediction: every object shifted by up to 2 px, ~15% missed, two spurious blobs, ids permuted
    pred_inst = np.zeros_like(gt_inst)
    new_ids = rng.permutation(100)[: len(ids) + 2] + 1
    for k, i in enumerate(ids):
        if rng.random() < 0.15:
            continue
        shifted = np.roll(gt_inst == i, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
        pred_inst[shifted] = new_ids[k]
    for k in range(2):
        cy, cx = rng.integers(8, size - 8, 2)
        pred_inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = new_ids[len(ids) + k]
    pred_ids = np.unique(pred_inst)[1:]
    lookup = dict(zip(new_ids.tolist(), list(classes[ids - 1]) + [1, 2]))
    pred_semantic = np.where(rng.random((size, size)) < 0.05, 0, np.where(semantic == 255, 0, semantic))
    pred = {
        "instances": pred_inst,
        "ids": pred_ids,
        "classes": np.array([lookup[i] for i in pred_ids.tolist()], np.int64),
        "scores": rng.random(len(pred_ids)),
        "semantic": pred_semantic,
    }
    return pred, gt


def naive_ious(pred: dict, gt: dict) -> np.ndarray:
    out = np.zeros((len(pred["ids"]), len(gt["ids"])))
    for a, i in enumerate(pred["ids"]):
        for b, j in enumerate(gt["ids"]):
            p, g = pred["instances"] == i, gt["instances"] == j
            union = np.logical_or(p, g).sum()
            out[a, b] = np.logical_and(p, g).sum() / union if union else 0.0
    return out


def timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<28s} {seconds:7.3f} s")
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reference-images", type=int, default=50)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    pairs = [scene(rng, args.size) for _ in range(args.images)]
    preds, gts = [p for p, _ in pairs], [g for _, g in pairs]
    n_inst = sum(len(g["ids"]) for g in gts)
    print(f"{args.images} images of {args.size}x{args.size}, {n_inst} ground-truth and "
          f"{sum(len(p['ids']) for p in preds)} predicted instances\n")

    timed("coco_mask_ap", coco_mask_ap, preds, gts)
    timed("voc_ap_r", voc_ap_r, preds, gts)
    timed("average_recall", average_recall, preds, gts)
    timed("panoptic_quality", panoptic_quality, preds, gts, THINGS, STUFF)
    maps_p, maps_g = [p["instances"] for p in preds], [g["instances"] for g in gts]
    timed("matching_accuracy", matching_accuracy, maps_p, maps_g)
    timed("adjusted_rand_index", adjusted_rand_index, maps_p, maps_g)
    results, total = timed(
        "evaluate_predictions (all)",
        evaluate_predictions, preds, gts, class_names=["bg", "a", "b", "c", "band"], stuff=STUFF,
    )
    print(f"\ntotal evaluation: {total:.2f} s for {args.images} images (target < 10 s): "
          f"{'OK' if total < 10 else 'TOO SLOW'}")
    print(f"ap={results['ap']:.3f} ap50={results['ap50']:.3f} ap_r_mean={results['ap_r_mean']:.3f} "
          f"pq={results['pq']:.3f} ar@10={results['ar@10']:.3f}")

    k = min(args.reference_images, args.images)
    _, fast = timed(f"labkit IoUs, {k} images", lambda: [overlaps(p, g) for p, g in read_pairs(preds[:k], gts[:k])])
    reference, slow = timed(f"naive IoU loop, {k} images", lambda: [naive_ious(p, g) for p, g in pairs[:k]])
    ours = [overlaps(p, g) for p, g in read_pairs(preds[:k], gts[:k])]
    agree = all(np.allclose(a, b) for a, b in zip(ours, reference))
    print(f"IoU speed-up over the naive loop: {slow / fast:.1f}x (identical values: {agree})")


if __name__ == "__main__":
    main()
