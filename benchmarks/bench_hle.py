"""HLE on ``synthetic:panoptic``: panoptic quality against a two-stream baseline, and decode speed.

Quality (``--part quality``): trains, with the fast CPU profile, through
:func:`labkit.workflows.train_run` (the path of ``labkit train``):

* ``hle`` with its defaults (Lovász losses, hierarchical space, Thomson means)
  and the semantic warm-up ``semantic_warmup=0.57`` (``--hle-set``; 40 of the
  70 epochs, 2000 steps, train Eq. 12 and 15 alone: from scratch the thing
  classes formed in no other setting tried, see the method's docstring),
* ``hle`` with cross-entropy in place of both Lovász losses (Table 6's ablation),
* ``semantic``, whose argmax map with the connected components of each thing
  class as instances is the baseline that needs no embedding,

all three for ``--epochs`` (70) with the ``--schedule`` (``onecycle``, the
schedule of the class-learning diagnostics in RESULTS.md),
evaluates all three on the ``test`` split in the same run and prints PQ,
PQ_things, PQ_stuff, AP50 and the class-agnostic matching accuracy of the
thing instances (masks right whatever their class: with PQ_things it tells
wrong classes from wrong masks): with the default decode thresholds, and with
the thresholds ``labkit tune`` picks on the ``val`` split (by PQ; the
baseline has none to tune).  The targets, on the tuned figures averaged over
``--seeds``: HLE PQ >= 0.6, ahead of the baseline, and the Lovász model
ahead of the cross-entropy one.  Run folders
(``--out/NAME``, ``--out/NAME_seedN`` for seeds other than 0) are kept, so an
interrupted benchmark resumes.

Speed (``--part speed``): decode time per image (``method.decode`` on stored
network outputs) at 64x64 and 512x1024, on the CPU and, when present, on CUDA,
with the network's forward time on the same input as the in-run reference;
the paper's figures (113 ms at 1024x2048 on a V100, 8 ms on a downsampled
embedding) are printed per megapixel beside them.  The model is the trained
``hle`` run when ``--out/hle`` holds one, else an untrained one (its seed map
is noise, so decoding then handles many more seeds: the figure is labelled).

Usage::

    python benchmarks/bench_hle.py [--part quality|speed|all] [--out runs/bench_hle] [--epochs N] [--threads T]
                                   [--seeds 0 1 2] [--hle-set KEY=VALUE ...] [--schedule cosine|onecycle|...]

Results go to ``--out/hle.json``; ``benchmarks/RESULTS.md`` keeps the last figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from labkit import methods, workflows
from labkit.cli import _overrides
from labkit.data.synthetic import SyntheticScenes
from labkit.train import SCHEDULES

DATA = "synthetic:panoptic"
RUNS = {
    "hle": ("hle", {}),
    "hle_cross_entropy": ("hle", {"instance_loss": "cross_entropy", "semantic_loss": "cross_entropy"}),
    "semantic_components": ("semantic", {}),
}
PAPER_MS_PER_MP = {"V100, 1024x2048": 113.0 / (1024 * 2048 / 1e6), "V100, downsampled": 8.0 / (1024 * 2048 / 1e6)}


def quality(out: Path, epochs: int, seeds: list[int], hle_params: dict, schedule: str) -> dict:
    results: dict[str, list[dict]] = {name: [] for name in RUNS}
    for seed in seeds:
        for name, (key, params) in RUNS.items():
            run = out / (name if seed == 0 else f"{name}_seed{seed}")
            start = time.perf_counter()
            workflows.train_run(key, DATA, run, epochs=epochs, device="cpu", seed=seed, progress=False,
                                method_params={**params, **(hle_params if key == "hle" else {})}, schedule=schedule)
            decode = {"things": [1, 2, 3]} if key == "semantic" else {}
            row = _scores(run, decode)
            if methods.get(key).decode_grid():  # the decode thresholds tuned on the val split (PQ), not on test
                tuned = workflows.tune_run(checkpoint=run / "model.pt", data=DATA, device="cpu", progress=False,
                                           write=False)
                row["tuned"] = {**_scores(run, {**decode, **tuned["chosen"]}), "params": tuned["chosen"],
                                "val_pq": tuned["chosen_score"]}
            row["seconds"] = time.perf_counter() - start
            results[name].append(row)
            shown = row.get("tuned", row)
            print(f"{name:22s} seed {seed}  PQ {row['pq']:.3f}  tuned on val: PQ {shown['pq']:.3f}  "
                  f"PQ_th {shown['pq_things']:.3f}  PQ_st {shown['pq_stuff']:.3f}  AP50 {shown['ap50']:.3f}  "
                  f"things matched class-agnostically {shown['matching_accuracy']:.3f}  "
                  f"({row['seconds']:.0f} s)", flush=True)
    pq = {name: [r.get("tuned", r)["pq"] for r in rows] for name, rows in results.items()}
    mean = {name: statistics.mean(v) for name, v in pq.items()}
    print("tuned PQ over seeds " + ", ".join(map(str, seeds)) + ": " + "; ".join(
        f"{name} mean {mean[name]:.3f} min {min(v):.3f}" for name, v in pq.items()))
    targets = {
        "hle PQ >= 0.6 (mean over seeds)": mean["hle"] >= 0.6,
        "hle ahead of semantic + components": mean["hle"] > mean["semantic_components"],
        "Lovász ahead of cross-entropy": mean["hle"] > mean["hle_cross_entropy"],
    }
    for k, ok in targets.items():
        print(f"  target {k}: {'met' if ok else 'NOT met'}")
    return {"runs": results, "mean_pq": mean, "targets": targets, "epochs": epochs, "seeds": seeds,
            "hle_params": hle_params, "schedule": schedule}


def _scores(run: Path, decode: dict) -> dict:
    r = workflows.evaluate_run(data=DATA, checkpoint=run / "model.pt", device="cpu", decode_params=decode,
                               progress=False)
    return {k: r[k] for k in ("pq", "pq_things", "pq_stuff", "ap50", "ap", "matching_accuracy")}


def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(out: Path) -> dict:
    from labkit.train import load_checkpoint

    trained = (out / "hle" / "model.pt").is_file()
    if trained:
        method, model, _ = load_checkpoint(out / "hle" / "model.pt")
    else:
        method = methods.get("hle")
        torch.manual_seed(0)
        model = method.build_model(3, 7)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = {}
    for dev in devices:
        model = model.to(dev).eval()
        for height, width in ((64, 64), (512, 1024)):
            sample = SyntheticScenes("panoptic", split="test", num_samples=1, size=(height, width))[0]
            image = sample["image"][None].to(dev)
            with torch.no_grad():
                forward = _time(lambda: model(image), 3)
                outputs = model(image)
                decode = _time(lambda: method.decode(outputs), 3)
                pred = method.decode(outputs)[0]
            mp = height * width / 1e6
            key = f"{dev} {height}x{width}"
            rows[key] = {"decode_ms": 1000 * decode, "forward_ms": 1000 * forward, "decode_ms_per_mp": 1000 * decode / mp,
                         "instances": len(pred["ids"])}
            print(f"{key:18s} decode {1000 * decode:8.1f} ms  forward {1000 * forward:8.1f} ms  "
                  f"decode/forward {decode / forward:5.2f}  decode {1000 * decode / mp:8.1f} ms/MP  "
                  f"({len(pred['ids'])} instances)", flush=True)
    for name, ms in PAPER_MS_PER_MP.items():
        print(f"paper ({name}): {ms:.1f} ms/MP")
    return {"trained_model": trained, "rows": rows, "paper_ms_per_mp": PAPER_MS_PER_MP}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("quality", "speed", "all"), default="all")
    parser.add_argument("--out", default="runs/bench_hle")
    parser.add_argument("--epochs", type=int, default=70, help="epochs of every run")
    parser.add_argument("--hle-set", nargs="*", default=["semantic_warmup=0.57"], metavar="KEY=VALUE",
                        help="hle parameters of both hle runs (give none for the paper's schedule)")
    parser.add_argument("--schedule", default="onecycle", choices=SCHEDULES, help="lr schedule of every run")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (targets on the mean)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}}
    print(json.dumps(report["machine"]))
    if args.part in ("quality", "all"):
        report["quality"] = quality(out, args.epochs, args.seeds, _overrides(args.hle_set), args.schedule)
    if args.part in ("speed", "all"):
        report["speed"] = speed(out)
    (out / "hle.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
