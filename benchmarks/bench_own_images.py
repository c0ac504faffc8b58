"""Issue 13 quality target: train on two 256 x 256 images of your own, tune on one, predict two.

What a new user does with a small fluorescence-nuclei folder, with the
synthetic ``nuclei`` family standing in for real data (16-bit counts):

1. write ``train/`` (2 images), ``val/`` (1) and ``test/`` (2) instance
   folders of 256 x 256 ``nuclei`` scenes to ``data/cache/own_images/``;
2. ``labkit train --method M --data .../train`` with its defaults (it finds
   ``val/`` beside ``train/``), one run per method;
3. ``labkit tune`` on ``val/`` -> ``decode.json``;
4. ``labkit evaluate`` on ``test/`` (which ``predict`` equally uses), with
   the untuned decoding and with ``decode.json``;
5. the same test images with the training-free ``watershed``, the reference
   measured in the same run;
6. both again on ``more_test/``, 10 further test scenes (the test split's
   generator with seed 1): two images hold about 70 nuclei, so one run's
   score there moves by about 0.05 with which nuclei happen to be in them
   (the binomial standard error); the 10 scenes (about 350 nuclei) halve
   that.  The issue's target is read on ``test/``; the table gives both.

Target: matching accuracy >= 0.8 at IoU 0.5 after tuning, and above
``watershed``, for every trainable method; and training under 10 minutes on
a 2-core CPU.  Training time is printed as wall time and as the process's
CPU time (wall time on a shared machine says little; the CPU time of a run
with N threads is roughly N x its wall time on an idle N-core machine).

The workflow functions are the ones ``labkit train | tune | evaluate`` call.
``--epochs`` and ``--set`` override the methods' defaults (then it is no
longer "with its defaults": the table says so).  Training on the folders
uses each method's folder defaults, as ``labkit train --data DIR`` does
(``Method.folder_params``).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from labkit import methods, workflows
from labkit.data.synthetic.nuclei import write_folder
from labkit.tuning import read_decode_json, write_decode_json

TARGET = 0.8
SPLITS = (("train", 2), ("val", 1), ("test", 2))
MORE_TEST = 10  # further test scenes, in more_test/


def make_data(root: Path, size: int = 256) -> Path:
    """The train/val/test and more_test folders under ``root`` (kept when already written: they are deterministic)."""
    folders = [(split, n, split, 0) for split, n in SPLITS] + [("more_test", MORE_TEST, "test", 1)]
    for folder, n, split, seed in folders:
        if not (root / folder / "images").is_dir() or len(list((root / folder / "images").iterdir())) != n:
            prefix = f"nuclei_{folder}" if seed else None
            write_folder(root / folder, n, size=size, split=split, seed=seed, prefix=prefix)
    return root


def run_method(method: str, data: Path, out: Path, epochs: int | None, params: dict, seed: int = 0) -> dict:
    run = out / method
    wall, cpu = time.perf_counter(), time.process_time()
    history = workflows.train_run(method, data / "train", run, epochs=epochs, device="cpu", progress=False,
                                  method_params=params, seed=seed)
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    # a decode.json tuned by an earlier run of this script: keep only what training recorded (dvis: the verifier)
    recorded = read_decode_json(run)
    tuned_keys = methods.get(method).decode_grid()
    write_decode_json(run, {k: v for k, v in recorded.items() if k not in tuned_keys})
    untuned = workflows.evaluate_run(data=str(data / "test"), checkpoint=run / "model.pt", device="cpu",
                                     progress=False)
    tuned_info = workflows.tune_run(checkpoint=run / "model.pt", data=str(data / "val"), device="cpu",
                                    progress=False)
    tuned = workflows.evaluate_run(data=str(data / "test"), checkpoint=run / "model.pt", device="cpu",
                                   progress=False)
    more = workflows.evaluate_run(data=str(data / "more_test"), checkpoint=run / "model.pt", device="cpu",
                                  progress=False)
    best = None
    if (run / "best.pt").is_file():
        best = workflows.evaluate_run(data=str(data / "test"), checkpoint=run / "best.pt", device="cpu",
                                      progress=False)
    return {
        "params": params, "epochs": len(history["epochs"]), "train_wall_s": train_wall, "train_cpu_s": train_cpu,
        "untuned": untuned, "tuned": tuned, "more_test_tuned": more, "best_pt_tuned": best, "tune": {
            k: tuned_info[k] for k in ("metric", "best", "best_score", "default_score", "chosen", "kept", "margin")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_own_images"))
    parser.add_argument("--data", type=Path, default=Path("data/cache/own_images"))
    parser.add_argument("--methods", nargs="+", default=["discriminative", "recurrent"])
    parser.add_argument("--epochs", type=int, default=None, help="override the methods' default epochs")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method parameters")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="training seed (a new --out for each seed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from labkit.cli import _overrides

    params = _overrides(args.set)
    data = make_data(args.data)
    watershed = workflows.evaluate_run(data=str(data / "test"), method="watershed", device="cpu", progress=False)
    ws = watershed["matching_accuracy"]
    watershed_more = workflows.evaluate_run(data=str(data / "more_test"), method="watershed", device="cpu",
                                            progress=False)
    ws_more = watershed_more["matching_accuracy"]
    results = {}
    for method in args.methods:
        results[method] = run_method(method, data, args.out, args.epochs, params, args.seed)
        (args.out / "bench_own_images.json").write_text(json.dumps(
            {"watershed": watershed, "watershed_more_test": watershed_more, "results": results,
             "epochs": args.epochs, "params": params, "seed": args.seed,
             "threads": args.threads}, indent=2, default=str))

    setting = "defaults" if args.epochs is None and not params else f"epochs={args.epochs} {params}"
    setting += f", seed {args.seed}"
    print(f"\nnuclei, 2 train / 1 val / 2 test images of 256 x 256; training: {setting}; "
          f"torch threads {args.threads}")
    print(f"{'method':16s} {'MA@0.5 untuned':>14s} {'tuned':>6s} {'best.pt':>7s} {'AP^r@0.5':>8s} "
          f"{'train wall':>10s} {'train cpu':>9s}  target (>= {TARGET}, > watershed {ws:.3f})  "
          f"{MORE_TEST} more: tuned (> watershed {ws_more:.3f})")
    print("-" * 130)
    for method, r in results.items():
        ma, more = r["tuned"]["matching_accuracy"], r["more_test_tuned"]["matching_accuracy"]
        best = r["best_pt_tuned"]["matching_accuracy"] if r["best_pt_tuned"] else float("nan")
        ok = ma >= TARGET and ma > ws
        ok_more = more >= TARGET and more > ws_more
        print(f"{method:16s} {r['untuned']['matching_accuracy']:14.3f} {ma:6.3f} {best:7.3f} "
              f"{r['tuned']['ap_r@0.5']:8.3f} {r['train_wall_s'] / 60:8.1f} m {r['train_cpu_s'] / 60:7.1f} m  "
              f"{'pass' if ok else 'FAIL':38s}  {more:.3f} {'pass' if ok_more else 'FAIL'}")
        t = r["tune"]
        other = f"; {t['best']}: {t['best_score']:.3f}" if t["best"] != t["chosen"] else ""
        verdict = (f"kept{other}, within one s.e. {t['margin']:.3f}" if t["kept"] else f"-> {t['best_score']:.3f}")
        print(f"{'':16s} tuned decode: {t['chosen']} (val {t['metric']} {t['default_score']:.3f} {verdict})")
    print(f"{'watershed':16s} {ws:14.3f} {'':>84s}  {ws_more:.3f}")


if __name__ == "__main__":
    main()
