"""Quality of the two embedding methods on the fixed synthetic test splits, against the issue's targets.

Trains, with the fast CPU profile (at most about 10 minutes of training per
method on a laptop CPU; settings in ``FAST``):

* ``discriminative`` on ``shapes`` and on ``sticks`` (sharing the budget),
* ``recurrent`` on ``digits``,

evaluates each on the family's ``test`` split, evaluates the training-free
``watershed`` baseline on ``sticks`` in the same process, and prints a table of
the figures with their targets and pass/fail:

* discriminative AP50 >= 0.8 on shapes, >= 0.7 on sticks, and ahead of watershed on sticks;
* recurrent AR@10 at IoU 0.5 (``ar50@10``) >= 0.8 on digits.

Shapes has four classes, so its AP is per class (COCO averages over classes)
and needs the semantic head to name the shape; the class-agnostic AP50 is
printed beside it.  Training goes through :func:`labkit.workflows.train_run`,
the path of ``labkit train``; each run folder is kept under ``--out``, and an
interrupted benchmark resumes from the last completed epoch.

Usage::

    python benchmarks/bench_quality.py [--out runs/bench_quality] [--only discriminative|recurrent]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from labkit import workflows
from labkit.data import load_dataset
from labkit.evaluation import predict_dataset
from labkit.metrics import average_recall, coco_mask_ap
from labkit.train import load_checkpoint

#: fast CPU profile: (method, family) -> epochs and method parameters (the method's defaults otherwise).
#: Sticks have one class, so the semantic head shares the embedding network there (half the cost).
FAST = {
    ("discriminative", "shapes"): {"epochs": 40, "params": {}},
    ("discriminative", "sticks"): {"epochs": 20, "params": {"separate_semantic": False}},
    ("recurrent", "digits"): {"epochs": 40, "params": {}},
}

#: (label, method, family, metric, target)
TARGETS = [
    ("discriminative AP50, shapes", "discriminative", "shapes", "ap50", 0.8),
    ("discriminative AP50, sticks", "discriminative", "sticks", "ap50", 0.7),
    ("recurrent AR@10 (IoU 0.5), digits", "recurrent", "digits", "ar50@10", 0.8),
]


def train_and_evaluate(method: str, family: str, out: Path, epochs: int, params: dict) -> dict:
    """Train ``method`` on ``synthetic:family`` (train split) and evaluate on its test split."""
    run = out / f"{method}_{family}"
    started = time.perf_counter()
    history = workflows.train_run(method, f"synthetic:{family}", run, epochs=epochs, device="cpu", progress=False,
                                  method_params=params)
    seconds = sum(e["seconds"] for e in history["epochs"])
    results = workflows.evaluate_run(data=f"synthetic:{family}", checkpoint=run / "model.pt", device="cpu",
                                     progress=False)
    results["train_seconds"] = seconds
    results["wall_seconds"] = time.perf_counter() - started
    m, model, _ = load_checkpoint(run / "model.pt")
    predictions, truths = predict_dataset(m, model, load_dataset(f"synthetic:{family}", split="test"),
                                          batch_size=8, progress=False)
    results["ap50_class_agnostic"] = coco_mask_ap(predictions, truths, class_agnostic=True)["ap50"]
    if method == "recurrent":  # one grouping, without the pooled proposals of smaller bandwidths (footnote 4)
        single, _ = predict_dataset(m, model, load_dataset(f"synthetic:{family}", split="test"), batch_size=8,
                                    progress=False, proposal_scales=())
        results["single_grouping"] = average_recall(single, truths)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_quality"))
    parser.add_argument("--only", choices=["discriminative", "recurrent"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))

    results = {}
    for (method, family), settings in FAST.items():
        if args.only and method != args.only:
            continue
        results[(method, family)] = train_and_evaluate(method, family, args.out, **settings)
    watershed = workflows.evaluate_run(data="synthetic:sticks", method="watershed", device="cpu", progress=False)

    rows = []
    for label, method, family, metric, target in TARGETS:
        if (method, family) in results:
            value = results[(method, family)][metric]
            rows.append((label, value, f">= {target}", value >= target))
    if ("discriminative", "sticks") in results:
        ours = results[("discriminative", "sticks")]["ap50"]
        rows.append(("watershed AP50, sticks", watershed["ap50"], "< discriminative", ours > watershed["ap50"]))

    print(f"\n{'figure':36s} {'value':>7s}  {'target':18s} result")
    print("-" * 72)
    for label, value, target, ok in rows:
        print(f"{label:36s} {value:7.3f}  {target:18s} {'pass' if ok else 'FAIL'}")
    print("\nmore figures (test splits):")
    for (method, family), r in results.items():
        print(f"  {method:15s} {family:7s} AP {r['ap']:.3f}  AP50 {r['ap50']:.3f}  "
              f"AP50 class-agnostic {r['ap50_class_agnostic']:.3f}  AR@10 {r['ar@10']:.3f}  "
              f"AR50@10 {r['ar50@10']:.3f}  training {r['train_seconds'] / 60:.1f} min")
    print(f"  {'watershed':15s} {'sticks':7s} AP {watershed['ap']:.3f}  AP50 {watershed['ap50']:.3f}")
    if ("recurrent", "digits") in results:
        single = results[("recurrent", "digits")]["single_grouping"]
        print(f"  recurrent digits, one grouping (no pooled proposals): AR@10 {single['ar@10']:.3f}  "
              f"AR50@10 {single['ar50@10']:.3f}  AR@60 {single['ar@60']:.3f}")
    summary = {f"{m}/{f}": r for (m, f), r in results.items()} | {"watershed/sticks": watershed}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"\nwrote {args.out / 'quality.json'}")


if __name__ == "__main__":
    main()
