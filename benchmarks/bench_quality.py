"""Quality of the two embedding methods on the fixed synthetic test splits, over several seeds, against the targets.

Trains, with the fast CPU profile (settings in ``FAST``), once per seed:

* ``discriminative`` on ``shapes`` and on ``sticks``,
* ``recurrent`` on ``digits``,

evaluates each on the family's ``test`` split, evaluates the training-free
``watershed`` baseline on ``sticks`` in the same process, and prints every
seed's figures, their mean and their minimum.  A target holds when the *mean*
over the seeds meets it (one lucky seed proves nothing; the minimum shows how
far a single run can fall):

* discriminative AP50 >= 0.8 on shapes, >= 0.7 on sticks, and ahead of watershed on sticks (every seed);
* recurrent AR@10 at IoU 0.5 (``ar50@10``) >= 0.8 on digits.

Shapes has four classes, so its AP is per class (COCO averages over classes)
and needs the semantic head to name the shape; the class-agnostic AP50 is
printed beside it.  Training goes through :func:`labkit.workflows.train_run`,
the path of ``labkit train``; each run folder (``--out/METHOD_FAMILY/seedS``)
is kept, and an interrupted benchmark resumes from the last completed epoch
of the seed it was on (finished seeds are only evaluated again).

Seeds run one after the other.  A seed fixes the result only together with
the machine and the number of torch threads (parallel reductions add floats
in a thread-dependent order, and training amplifies the last-bit
differences), so the threads, CPU and torch version are printed and saved.
``--epochs N`` shortens every training for a quick look; such figures are
labelled as reduced and say nothing about the targets.

Usage::

    python benchmarks/bench_quality.py [--out runs/bench_quality] [--seeds 0 1 2]
        [--only discriminative|recurrent|discriminative/sticks|...] [--epochs N] [--threads T]

Results go to ``--out/quality.json``; ``benchmarks/RESULTS.md`` keeps the last full figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from labkit import workflows
from labkit.data import load_dataset
from labkit.evaluation import evaluate_predictions, predict_dataset
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


def train_and_evaluate(method: str, family: str, run: Path, epochs: int, params: dict, seed: int) -> dict:
    """Train ``method`` on ``synthetic:family`` (train split) with ``seed``; evaluate on its test split.

    The test split is predicted once and scored as ``labkit evaluate`` scores it
    (:func:`labkit.evaluation.evaluate_predictions` with the dataset's classes).
    """
    started = time.perf_counter()
    history = workflows.train_run(method, f"synthetic:{family}", run, epochs=epochs, device="cpu", progress=False,
                                  method_params=params, seed=seed)
    m, model, _ = load_checkpoint(run / "model.pt")
    test = load_dataset(f"synthetic:{family}", split="test")
    predictions, truths = predict_dataset(m, model, test, batch_size=8, progress=False)
    results = evaluate_predictions(predictions, truths, class_names=test.class_names,
                                   things=getattr(test, "things", None), stuff=getattr(test, "stuff", None),
                                   task=m.task)
    results["train_seconds"] = sum(e["seconds"] for e in history["epochs"])
    results["ap50_class_agnostic"] = coco_mask_ap(predictions, truths, class_agnostic=True)["ap50"]
    if method == "recurrent":  # one grouping, without the pooled proposals of smaller bandwidths (footnote 4)
        single, _ = predict_dataset(m, model, test, batch_size=8, progress=False, proposal_scales=())
        results["single_grouping"] = average_recall(single, truths)
    results["wall_seconds"] = time.perf_counter() - started
    return results


def machine() -> dict:
    """What a seed's result depends on besides the seed."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def selected(only: str | None) -> list[tuple[str, str]]:
    keys = list(FAST)
    if only is None:
        return keys
    chosen = [k for k in keys if only in (k[0], f"{k[0]}/{k[1]}")]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches none of {[f'{m}/{f}' for m, f in keys]}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_quality"))
    parser.add_argument("--only", default=None, help="a method key or METHOD/FAMILY")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override every training's epochs (reduced run)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: min(cores, 4))")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), 4)))
    reduced = args.epochs is not None
    info = machine() | {"seeds": args.seeds, "epochs_override": args.epochs,
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print("machine:", ", ".join(f"{k} {v}" for k, v in info.items()))
    if reduced:
        print(f"REDUCED RUN: every training shortened to {args.epochs} epochs; the targets do not apply")

    results: dict[tuple[str, str], dict[int, dict]] = {}
    for method, family in selected(args.only):
        settings = dict(FAST[(method, family)])
        if reduced:
            settings["epochs"] = args.epochs
        tag = f"_{args.epochs}ep" if reduced else ""
        for seed in args.seeds:
            run = args.out / f"{method}_{family}{tag}" / f"seed{seed}"
            r = train_and_evaluate(method, family, run, seed=seed, **settings)
            results.setdefault((method, family), {})[seed] = r
            print(f"  {method:15s} {family:7s} seed {seed}: AP {r['ap']:.3f}  AP50 {r['ap50']:.3f}  "
                  f"AP50 class-agnostic {r['ap50_class_agnostic']:.3f}  AR50@10 {r['ar50@10']:.3f}  "
                  f"training {r['train_seconds'] / 60:.1f} min ({settings['epochs']} epochs)", flush=True)
    watershed = workflows.evaluate_run(data="synthetic:sticks", method="watershed", device="cpu", progress=False)

    print(f"\n{'figure':36s} {'per seed':24s} {'mean':>6s} {'min':>6s}  {'target':18s} result")
    print("-" * 104)
    for label, method, family, metric, target in TARGETS:
        if (method, family) not in results:
            continue
        values = [r[metric] for r in results[(method, family)].values()]
        mean = statistics.fmean(values)
        verdict = "reduced" if reduced else ("pass" if mean >= target else "FAIL")
        per_seed = " ".join(f"{v:.3f}" for v in values)
        print(f"{label:36s} {per_seed:24s} {mean:6.3f} {min(values):6.3f}  {'>= ' + str(target):18s} {verdict}")
    if ("discriminative", "sticks") in results:
        ours = [r["ap50"] for r in results[("discriminative", "sticks")].values()]
        ok = min(ours) > watershed["ap50"]
        print(f"{'watershed AP50, sticks':36s} {'(no training)':24s} {watershed['ap50']:6.3f} {'':6s}  "
              f"{'< every seed':18s} {'reduced' if reduced else ('pass' if ok else 'FAIL')}")
    if ("recurrent", "digits") in results:
        single = [r["single_grouping"]["ar50@10"] for r in results[("recurrent", "digits")].values()]
        print(f"  recurrent digits, one grouping (no pooled proposals): AR50@10 per seed "
              f"{' '.join(f'{v:.3f}' for v in single)}, mean {statistics.fmean(single):.3f}")
    summary = {"machine": info,
               "runs": {f"{m}/{f}": {str(s): r for s, r in per.items()} for (m, f), per in results.items()},
               "watershed/sticks": watershed}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"\nwrote {args.out / 'quality.json'}")


if __name__ == "__main__":
    main()
