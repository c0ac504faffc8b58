"""Forward and decode milliseconds per image and peak memory of every method, by image size.

For each method of ``labkit.methods.available()`` and each image size
(default 64x64, 256x256 and 512x1024; UNet backbone, plus the ResNet-50
backbone at 512x1024), one synthetic ``shapes`` scene of that size goes
through ``model(image)`` and ``method.decode(outputs)`` at batch size 1,
after a warm-up pass at 64x64.  The reference is the network itself: the
goal is that every method's decode at 512x1024 takes no longer than its
UNet forward pass in the same run (printed as ``decode / forward``).

Each measurement runs in a forked child process on CPU, so its peak memory
(growth of the resident set over the forward + decode) is its own and a
runaway decoder is stopped at ``--timeout`` seconds; on CUDA (``--device
cuda``, or ``auto`` with a GPU) measurements run in-process with
synchronised timers and ``torch.cuda.max_memory_allocated``.

Networks are untrained (``weights=None``) unless ``--run RUN_DIR`` gives a
trained checkpoint for a method: decoding an untrained network's output
clusters near-random maps, which can be faster or slower than decoding a
trained one, so the table says which it used.  A trained run is measured on a
scene of its own synthetic family (``digits`` for a run trained on digits;
``--family`` for untrained networks and runs trained on a folder; the family
column says which) and decodes with its ``decode.json`` when ``labkit
tune`` wrote one, as ``evaluate`` would.  Training-free methods
(``watershed``, ``components``) have no network and decode the image.  Forward
and decode times are each the best of ``--repeats`` passes.

A second table times discriminative's seeded mean shift on the same points
with seeds shifted together (the default) and one at a time
(``batch_size=1``, the paper's loop), and the papers' own speed figures are
printed beside for reference (different hardware and image sizes).

    python benchmarks/bench_speed.py [--sizes 64x64 256x256 512x1024] [--methods KEY ...]
        [--run RUN_DIR ...] [--family shapes] [--repeats 1] [--device auto|cpu|cuda] [--threads N]
        [--no-resnet] [--timeout 300] [--no-seeded]

The table's ``inst`` column counts the decoded instances, ``gt`` the scene's
objects (a decode that finds nothing is fast for the wrong reason).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from typing import Any

import torch

PAPER_FIGURES = (
    "DVIS (paper): COCO test-dev AP 30.3 at 38.0 FPS (26 ms / image), ResNet-50, V100, YOLACT-style 550x550 input",
    "HLE (paper): 91 ms network + 113 ms decoding at 1024x2048, GPU",
    "discriminative (issue 14, before this benchmark's decoder changes): decode 2.7 s vs UNet forward 1.5 s "
    "at 512x1024 on this 2-core CPU, 0.1 s per 64x64 image",
)


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    try:
        return int(h), int(w or h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, got {text!r}") from None


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(key: str, backbone: str, run: str | None, device: torch.device, default_family: str):
    """(method, model, 'trained'|'untrained'|'none', in_channels, family): ``run``'s network, else a fresh one.

    A trained run's scenes are of the family it was trained on (:func:`labkit.compare.family_of`),
    ``default_family`` for an untrained network or a run trained on other data.
    """
    from labkit import methods
    from labkit.compare import family_of
    from labkit.data.synthetic import get_family
    from labkit.train import load_checkpoint

    if run is not None:
        method, model, checkpoint = load_checkpoint(run, device=device)
        family = family_of(checkpoint) or default_family
        return method, model, "trained", int(checkpoint["data"]["in_channels"]), family
    method = methods.get(key)
    kwargs: dict[str, Any] = {"weights": None} if backbone != "unet" else {}
    family = get_family(default_family)
    channels = int(family.in_channels)
    model = method.build_model(in_channels=channels, num_classes=len(family.class_names), backbone=backbone, **kwargs)
    return method, model.to(device).eval(), ("untrained" if method.trainable else "none"), channels, default_family


def measure(key: str, backbone: str, size: tuple[int, int], runs: dict[str, str], device: str, threads: int,
            repeats: int = 1, default_family: str = "shapes") -> dict[str, Any]:
    """Forward and decode milliseconds (best of ``repeats``) and peak memory of one method at one size."""
    from labkit.compare import time_forward_decode
    from labkit.data.synthetic import SyntheticScenes
    from labkit.workflows import decode_settings

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    run = runs.get(key) if backbone == "unet" else None
    method, model, weights, channels, family = _load(key, backbone, run, dev, default_family)
    scenes = SyntheticScenes(family, split="test", num_samples=1, size=size)
    params = decode_settings(run, None) if run else {}
    image = scenes[0]["image"][:channels][None].to(dev)
    warm = SyntheticScenes(family, split="test", num_samples=1, size=64)[0]["image"][:channels][None].to(dev)
    forward, decode = [], []
    with torch.no_grad():
        time_forward_decode(method, model, warm, params, dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        base = _rss_mb()
        for _ in range(repeats):
            predictions, forward_ms, decode_ms = time_forward_decode(method, model, image, params, dev)
            forward.append(forward_ms)
            decode.append(decode_ms)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else max(0.0, _peak_mb() - base)
    return {
        "forward_ms": min(forward), "decode_ms": min(decode), "peak_mb": peak,
        "weights": weights, "family": family, "instances": int(len(predictions[0]["ids"])),
        "objects": int(scenes[0]["instances"].unique().gt(0).sum()),
        "params": sum(p.numel() for p in model.parameters()),
    }


def _child(conn, *args) -> None:
    try:
        conn.send(measure(*args))
    except Exception as exc:  # reported in the table, the benchmark goes on
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def measure_isolated(args: tuple, timeout: float) -> dict[str, Any]:
    """:func:`measure` in a forked child (CPU): its own peak memory, stopped after ``timeout`` seconds."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, *args))
    proc.start()
    child.close()
    if parent.poll(timeout):
        result = parent.recv()
    else:
        result = {"error": f"timeout after {timeout:.0f} s"}
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return result


def seeded_reference(threads: int, n: int = 20000, dim: int = 8, objects: int = 12) -> list[str]:
    """Seeded mean shift on embedding-like points: batched seeds vs one seed at a time."""
    from labkit.clustering import seeded_mean_shift

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(objects, dim, generator=g) * 3
    labels = torch.randint(objects, (n,), generator=g)
    points = centers[labels] + 0.12 * torch.randn(n, dim, generator=g)
    times, found = {}, {}
    for batch in (64, 1):
        rounds = []
        for _ in range(2):
            start = time.perf_counter()
            modes, _ = seeded_mean_shift(points, 0.5, min_size=8, max_tries=max(256, n // 64), batch_size=batch)
            rounds.append(time.perf_counter() - start)
        times[batch], found[batch] = min(rounds), len(modes)
    return [
        f"seeded mean shift, {n} points x {dim} dims, {objects} objects (discriminative's decoder engine):",
        f"  seeds in batches of up to 64: {1000 * times[64]:8.1f} ms, {found[64]} modes",
        f"  one seed at a time          : {1000 * times[1]:8.1f} ms, {found[1]} modes",
        f"  speed-up: {times[1] / times[64]:.1f}x",
    ]


def main(argv: list[str] | None = None) -> int:
    from labkit import methods

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(64, 64), (256, 256), (512, 1024)])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every available method")
    parser.add_argument("--run", nargs="*", default=[], help="trained run folders (their method is read from them)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-resnet", action="store_true", help="skip the ResNet-50 backbone at the largest size")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per CPU measurement")
    parser.add_argument("--no-seeded", action="store_true", help="skip the seeded mean shift reference")
    parser.add_argument("--repeats", type=int, default=1, help="forward + decode passes per measurement (best kept)")
    parser.add_argument("--family", default="shapes",
                        help="synthetic family of the scene for a network not trained on one (untrained, or trained "
                             "on a folder, e.g. nuclei for a run trained on microscopy images)")
    args = parser.parse_args(argv)

    from labkit.checkpoint import read_checkpoint

    runs = {read_checkpoint(r)["method"]["key"]: r for r in args.run}
    keys = args.methods or methods.available()
    unknown = sorted(set(keys) - set(methods.available()))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; available: {methods.available()}")
    devices = ["cpu"]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append("cuda")
    largest = max(args.sizes, key=lambda s: s[0] * s[1])
    plan = [(k, "unet", s) for k in keys for s in args.sizes]
    if not args.no_resnet:
        plan += [(k, "resnet50", largest) for k in keys if methods.get(k).trainable]

    print(f"torch {torch.__version__}, CPU threads {args.threads}, devices {devices}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    header = (f"{'method':15s} {'backbone':9s} {'device':6s} {'size':>9s} {'weights':9s} {'family':8s} "
              f"{'forward ms':>11s} {'decode ms':>10s} {'dec/fwd':>8s} {'peak MB':>8s} {'inst':>5s} {'gt':>5s}")
    print(header)
    print("-" * len(header))
    results: dict[tuple, dict[str, Any]] = {}
    for device in devices:
        for key, backbone, size in plan:
            task = (key, backbone, size, runs, device, args.threads, args.repeats, args.family)
            r = measure_isolated(task, args.timeout) if device == "cpu" else _in_process(task)
            results[(key, backbone, device, size)] = r
            name = f"{size[0]}x{size[1]}"
            if "error" in r:
                print(f"{key:15s} {backbone:9s} {device:6s} {name:>9s} {'':9s} {r['error']}")
                continue
            ratio = r["decode_ms"] / r["forward_ms"] if r["params"] else float("nan")
            print(f"{key:15s} {backbone:9s} {device:6s} {name:>9s} {r['weights']:9s} {r['family']:8s} "
                  f"{r['forward_ms']:11.1f} {r['decode_ms']:10.1f} {ratio:8.2f} {r['peak_mb']:8.0f} "
                  f"{r['instances']:5d} {r['objects']:5d}", flush=True)

    print()
    print(f"goal: decode <= UNet forward at {largest[0]}x{largest[1]} (same run, same device)")
    for device in devices:
        for key in keys:
            r = results.get((key, "unet", device, largest), {})
            if "error" in r or not r:
                verdict = f"not measured ({r.get('error', 'missing')})"
            elif not r["params"]:
                verdict = f"no network; decode {r['decode_ms']:.0f} ms"
            else:
                ratio = r["decode_ms"] / r["forward_ms"]
                verdict = f"{'met' if ratio <= 1 else 'NOT met'}: decode / forward = {ratio:.2f} ({r['weights']})"
            print(f"  {device:5s} {key:15s} {verdict}")
    if not args.no_seeded:
        print()
        print("\n".join(seeded_reference(args.threads)))
    print()
    print("papers' figures (other hardware and sizes, for orientation):")
    for line in PAPER_FIGURES:
        print(f"  {line}")
    return 0


def _in_process(task: tuple) -> dict[str, Any]:
    try:
        return measure(*task)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    sys.exit(main())
