"""IRNet random walk (Eq. 12-13): labkit's sparse walk against the authors' dense T^256, seconds and peak memory.

Cases, each in a subprocess of its own so its peak memory is its own:

* ``dense64`` / ``sparse64``: a 64 x 64-node graph (4,096 pixels, radius 5),
  the authors' dense ``T`` squared 8 times (``T^256``) then applied, against
  256 sparse products; both results are compared (max abs difference).
* ``sparse1024``: the sparse walk alone on a 1024 x 1024 image at stride 4
  (a 256 x 256 map, 65,536 nodes, radius 5); target: peak memory < 2 GB on CPU.
  (The dense matrix would be 65,536^2 float32 = 16 GiB.)

Peak memory: on CPU the growth of the process's peak resident set size
(``ru_maxrss``) over its size once the inputs exist; on CUDA
``torch.cuda.max_memory_allocated``.  Run:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_random_walk.py [--device cpu|cuda] [--channels 4]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from labkit.clustering.random_walk import dense_random_walk, random_walk, transition_matrix


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _inputs(side: int, channels: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    boundary = (torch.rand(side, side, generator=gen) ** 4).to(device)
    scores = torch.rand(channels, side, side, generator=gen).to(device)
    return boundary, scores


def run_case(case: str, device: str, channels: int) -> dict:
    side = 256 if case == "sparse1024" else 64
    boundary, scores = _inputs(side, channels, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    start = time.perf_counter()
    transition = transition_matrix(boundary, radius=5, beta=10.0)
    if case.startswith("dense"):
        out = dense_random_walk(transition, scores, squarings=8)
    else:
        out = random_walk(transition, scores, steps=256)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _rss_mb() - base
    seconds = time.perf_counter() - start
    if case.endswith("64"):
        torch.save(out.cpu(), f"/tmp/bench_random_walk_{case}_{device}.pt")
    return {"case": case, "nodes": side * side, "nnz": int(transition._nnz()), "seconds": seconds, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--channels", type=int, default=4, help="score maps walked at once (e.g. instance CAMs)")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device, args.channels)))
        return
    results = {}
    for case in ("dense64", "sparse64", "sparse1024"):
        proc = subprocess.run([sys.executable, __file__, "--case", case, "--device", args.device,
                               "--channels", str(args.channels)], capture_output=True, text=True, check=True)
        results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[case]
        print(f"{case:11s} {r['nodes']:6d} nodes  nnz {r['nnz']:>12,d}  {r['seconds']:8.3f} s  peak +{r['peak_mb']:9.1f} MB",
              flush=True)
    dense = torch.load(f"/tmp/bench_random_walk_dense64_{args.device}.pt")
    sparse = torch.load(f"/tmp/bench_random_walk_sparse64_{args.device}.pt")
    diff = float((dense - sparse).abs().max())
    scale = float(dense.abs().max())
    d, s, big = results["dense64"], results["sparse64"], results["sparse1024"]
    print(f"64x64 graph ({args.device}, {args.channels} channels): dense/sparse time {d['seconds'] / s['seconds']:.1f}x, "
          f"peak memory {d['peak_mb']:.0f} MB vs {s['peak_mb']:.0f} MB; max |dense - sparse| = {diff:.2e} "
          f"(scores up to {scale:.2f})")
    verdict = "meets" if big["peak_mb"] < 2048 else "MISSES"
    print(f"1024x1024 image at stride 4 ({big['nodes']} nodes, radius 5): {big['seconds']:.1f} s, "
          f"peak +{big['peak_mb']:.0f} MB ({verdict} the < 2 GB target)")


if __name__ == "__main__":
    main()
