"""HLE on ``synthetic:panoptic``: panoptic quality against a two-stream baseline, and decode speed.

Quality (``--part quality``): trains, with the fast CPU profile, through
:func:`labkit.workflows.train_run` (the path of ``labkit train``):

* ``hle`` with its defaults (Lovász losses, hierarchical space, Thomson means),
* ``hle`` with cross-entropy in place of both Lovász losses (Table 6's ablation),
* ``semantic``, whose argmax map with the connected components of each thing
  class as instances is the baseline that needs no embedding,

evaluates all three on the ``test`` split in the same run and prints PQ,
PQ_things, PQ_stuff and AP50, with the targets: HLE PQ >= 0.6, ahead of the
baseline, and the Lovász model ahead of the cross-entropy one.  Run folders
(``--out/NAME``) are kept, so an interrupted benchmark resumes.

Speed (``--part speed``): decode time per image (``method.decode`` on stored
network outputs) at 64x64 and 512x1024, on the CPU and, when present, on CUDA,
with the network's forward time on the same input as the in-run reference;
the paper's figures (113 ms at 1024x2048 on a V100, 8 ms on a downsampled
embedding) are printed per megapixel beside them.  The model is the trained
``hle`` run when ``--out/hle`` holds one, else an untrained one (its seed map
is noise, so decoding then handles many more seeds: the figure is labelled).

Usage::

    python benchmarks/bench_hle.py [--part quality|speed|all] [--out runs/bench_hle] [--epochs N] [--threads T]

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
from labkit.data.synthetic import SyntheticScenes

DATA = "synthetic:panoptic"
RUNS = {
    "hle": ("hle", {}),
    "hle_cross_entropy": ("hle", {"instance_loss": "cross_entropy", "semantic_loss": "cross_entropy"}),
    "semantic_components": ("semantic", {}),
}
PAPER_MS_PER_MP = {"V100, 1024x2048": 113.0 / (1024 * 2048 / 1e6), "V100, downsampled": 8.0 / (1024 * 2048 / 1e6)}


def quality(out: Path, epochs: int | None) -> dict:
    results = {}
    for name, (key, params) in RUNS.items():
        run = out / name
        start = time.perf_counter()
        workflows.train_run(key, DATA, run, epochs=epochs, device="cpu", method_params=params, progress=False)
        decode = {"things": [1, 2, 3]} if key == "semantic" else {}
        r = workflows.evaluate_run(data=DATA, checkpoint=run / "model.pt", device="cpu", decode_params=decode,
                                   progress=False)
        results[name] = {k: r[k] for k in ("pq", "pq_things", "pq_stuff", "ap50", "ap")}
        results[name]["seconds"] = time.perf_counter() - start
        print(f"{name:22s} PQ {r['pq']:.3f}  PQ_th {r['pq_things']:.3f}  PQ_st {r['pq_stuff']:.3f}  "
              f"AP50 {r['ap50']:.3f}  ({results[name]['seconds']:.0f} s)", flush=True)
    hle, ce, base = results["hle"], results["hle_cross_entropy"], results["semantic_components"]
    targets = {
        "hle PQ >= 0.6": hle["pq"] >= 0.6,
        "hle ahead of semantic + components": hle["pq"] > base["pq"],
        "Lovász ahead of cross-entropy": hle["pq"] > ce["pq"],
    }
    for k, ok in targets.items():
        print(f"  target {k}: {'met' if ok else 'NOT met'}")
    return {"runs": results, "targets": targets, "reduced_epochs": epochs}


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
    parser.add_argument("--epochs", type=int, default=None, help="shorter trainings (figures say nothing about targets)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}}
    print(json.dumps(report["machine"]))
    if args.part in ("quality", "all"):
        report["quality"] = quality(out, args.epochs)
    if args.part in ("speed", "all"):
        report["speed"] = speed(out)
    (out / "hle.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
