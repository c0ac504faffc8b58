"""DVIS benchmarks: decode speed against ``discriminative`` and quality on the synthetic test splits.

``--part speed`` (default): decode time per image of

* ``dvis``: discretisation (1-D mean shift at 0.9 and 0.4, connected pieces,
  pooling) plus the verification head on every candidate, and
* ``discriminative``: its decode (seeded mean shift of an 8-dim embedding in
  the foreground of the semantic logits, merging, splitting by class),

on network outputs of the same size built from one synthetic layout of
plateaus / embedding clusters (``--sizes``, default 64x64 and 512x1024), in
the same process, with the ratio ``discriminative / dvis``.  The goal of
the issue: DVIS at least 5x faster at 512x1024.  The heads are untrained
(random weights: the timing does not depend on them); the maps are ideal
outputs (plateaus 1 apart plus noise 0.05; embedding clusters 3 apart plus
noise 0.1), so both decoders see their best case.

``--part quality``: trains (through :func:`labkit.workflows.train_run`, the
path of ``labkit train``, resumable under ``--out``) ``dvis`` and
``discriminative`` on ``shapes`` and ``sticks`` with ``--epochs`` and
evaluates them on the fixed test splits; for DVIS also with the
verification switched off (the same candidates with uniform scores), and
prints AP, AP50, AP75 next to the targets (dvis AP50 >= 0.8 on shapes, per
class; >= 0.7 on sticks).

``--part cuda``: end-to-end images/s at 513x513 with the ResNet-50 backbone
(untrained) on CUDA, next to the paper's 38 FPS on a V100.

Usage::

    python benchmarks/bench_dvis.py [--part speed|quality|cuda] [--sizes 64x64 512x1024] [--repeats 3]
    python benchmarks/bench_dvis.py --part quality [--only dvis] [--families sticks] [--seed 1] [--set sampling=random]

(``--set``: dvis parameters over the defaults, for experiments.)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from labkit import methods
from labkit.cli import _overrides


def layout(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """An instance map with non-overlapping rectangles, about one per 48x48 pixels (at least 3)."""
    gen = torch.Generator().manual_seed(seed)
    inst = torch.zeros(height, width, dtype=torch.int64)
    n = max(3, height * width // (48 * 48) // 2)
    k = 0
    for _ in range(20 * n):
        if k == n:
            break
        h = int(torch.randint(max(4, height // 16), max(5, height // 5), (1,), generator=gen))
        w = int(torch.randint(max(4, width // 16), max(5, width // 5), (1,), generator=gen))
        y = int(torch.randint(0, height - h + 1, (1,), generator=gen))
        x = int(torch.randint(0, width - w + 1, (1,), generator=gen))
        if (inst[y:y + h, x:x + w] > 0).any():
            continue
        k += 1
        inst[y:y + h, x:x + w] = k
    return inst


def dvis_outputs(inst: torch.Tensor, channels: int = 16) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    f = torch.where(inst > 0, 2.0 + ((inst - 1) % 6).float(), torch.zeros_like(inst, dtype=torch.float32))
    f = f + 0.05 * torch.randn(inst.shape, generator=gen)
    return {"label": f[None, None], "features": torch.randn(1, channels, *inst.shape, generator=gen)}


def discriminative_outputs(inst: torch.Tensor, dim: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    centres = 3.0 * torch.randn(int(inst.max()) + 1, dim, generator=gen)
    emb = centres[inst].permute(2, 0, 1) + 0.1 * torch.randn(dim, *inst.shape, generator=gen)
    logits = torch.stack([(inst == 0).float(), (inst > 0).float()]) * 10 - 5
    return {"embedding": emb[None], "semantic": logits[None]}


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def speed(sizes: list[str], repeats: int) -> list[dict]:
    from labkit.models.verification import VerificationHead

    dvis = methods.get("dvis")
    disc = methods.get("discriminative")
    torch.manual_seed(0)
    head = VerificationHead(16, 2).eval()
    rows = []
    for size in sizes:
        height, width = (int(v) for v in size.split("x"))
        inst = layout(height, width)
        out_d, out_e = dvis_outputs(inst), discriminative_outputs(inst)
        n_dvis = len(dvis.decode(out_d, verifier=head, verify_threshold=0.0)[0]["ids"])
        n_disc = len(disc.decode(out_e)[0]["ids"])
        small = height * width <= 1e5  # milliseconds: many repeats, the minimum filters out other jobs' noise
        t_dvis = best_time(lambda: dvis.decode(out_d, verifier=head, verify_threshold=0.0),
                           max(repeats, 30) if small else repeats)
        t_disc = best_time(lambda: disc.decode(out_e), max(repeats, 30) if small else max(1, repeats // 3))
        rows.append({"size": size, "instances": int(inst.max()), "dvis_s": t_dvis, "dvis_candidates": n_dvis,
                     "discriminative_s": t_disc, "discriminative_instances": n_disc, "ratio": t_disc / t_dvis})
        print(f"{size:>10s}  {int(inst.max()):3d} objects  dvis {t_dvis * 1e3:9.1f} ms ({n_dvis} candidates)  "
              f"discriminative {t_disc * 1e3:9.1f} ms ({n_disc})  discriminative/dvis {t_disc / t_dvis:6.1f}x",
              flush=True)
    return rows


#: fast CPU profile: (method, family) -> epochs and method parameters
QUALITY = {
    ("dvis", "shapes"): {"params": {}},
    # sticks cross at one point: uniform pairs reach both ends of a stick (longer than the stratified window),
    # and the pieces of a stick cut by one on top are joined (benchmarks/RESULTS.md, 2026-11-29 session 11)
    ("dvis", "sticks"): {"params": {"sampling": "random", "num_pairs": 16384, "piece_gap": 6}},
    ("discriminative", "shapes"): {"params": {}},
    ("discriminative", "sticks"): {"params": {"separate_semantic": False}},
}
TARGETS = {("dvis", "shapes"): 0.8, ("dvis", "sticks"): 0.7}


def quality(out: Path, epochs: int | None, only: str | None, families: list[str] | None = None,
            dvis_set: dict | None = None, seed: int = 0) -> list[dict]:
    from labkit import workflows

    rows = []
    for (method, family), cfg in QUALITY.items():
        if (only and method != only) or (families and family not in families):
            continue
        run = out / (f"{method}_{family}" + (f"_s{seed}" if seed else ""))
        params = {**cfg["params"], **(dvis_set or {})} if method == "dvis" else cfg["params"]
        history = workflows.train_run(method, f"synthetic:{family}", run, epochs=epochs, device="cpu",
                                      progress=False, method_params=params, seed=seed)
        variants = {"": {}}
        if method == "dvis":
            variants = {" verified": {"verifier": str(run / "verification")}, " uniform scores": {"verify": False}}
        for label, params in variants.items():
            r = workflows.evaluate_run(data=f"synthetic:{family}", checkpoint=run / "model.pt", device="cpu",
                                       progress=False, decode_params=params)
            row = {"method": method + label, "family": family, "seed": seed,
                   "ap": r["ap"], "ap50": r["ap50"], "ap75": r["ap75"],
                   "ap50_agnostic": _agnostic_ap50(run, family, params),
                   "epochs": len(history["epochs"]), "train_s": sum(e["seconds"] for e in history["epochs"]),
                   "target_ap50": TARGETS.get((method, family))}
            rows.append(row)
            target = "" if row["target_ap50"] is None else f"  (target AP50 >= {row['target_ap50']})"
            print(f"{row['method']:26s} {family:7s} AP {row['ap']:.3f}  AP50 {row['ap50']:.3f}  AP75 {row['ap75']:.3f}"
                  f"  class-agnostic AP50 {row['ap50_agnostic']:.3f}  [{row['epochs']} epochs, {row['train_s']:.0f} s]"
                  f"{target}", flush=True)
    return rows


def _agnostic_ap50(run: Path, family: str, params: dict) -> float:
    """Class-agnostic AP50 on the test split (the same candidates with or without the verifier's classes)."""
    from labkit.data import load_dataset
    from labkit.evaluation import predict_dataset
    from labkit.metrics import coco_mask_ap
    from labkit.train import load_checkpoint

    m, model, _ = load_checkpoint(run / "model.pt")
    decode = dict(params)
    if m.key == "dvis" and "verify" not in decode:
        decode.setdefault("verifier", str(run / "verification"))
    preds, truths = predict_dataset(m, model, load_dataset(f"synthetic:{family}", split="test"), batch_size=8,
                                    progress=False, **decode)
    return coco_mask_ap(preds, truths, class_agnostic=True)["ap50"]


def cuda_fps(repeats: int) -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("--part cuda needs a CUDA GPU")
    from labkit.models.verification import VerificationHead

    dvis = methods.get("dvis")
    model = dvis.build_model(in_channels=3, num_classes=81, backbone="resnet50").cuda().eval()
    head = VerificationHead(model.config["heads"]["features"], 81).cuda().eval()
    image = torch.rand(1, 3, 513, 513, device="cuda")
    with torch.no_grad():
        model(image)  # warm-up

        def run():
            with torch.autocast("cuda"):
                out = model(image)
            dvis.decode(out, verifier=head, verify_threshold=0.0)
            torch.cuda.synchronize()

        t = best_time(run, repeats)
        with torch.autocast("cuda"):
            out = model(image)
        torch.cuda.synchronize()
        t_net = best_time(lambda: (model(image), torch.cuda.synchronize()), repeats)
    row = {"fps_end_to_end": 1 / t, "fps_network": 1 / t_net, "paper_fps_v100": 38.0,
           "device": torch.cuda.get_device_name()}
    print(f"513x513 ResNet-50 (untrained) on {row['device']}: end to end {row['fps_end_to_end']:.1f} images/s, "
          f"network alone {row['fps_network']:.1f}; paper: 38.0 FPS on a V100 (ratio {row['fps_end_to_end'] / 38:.2f})")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="speed", choices=["speed", "quality", "cuda"])
    parser.add_argument("--sizes", nargs="*", default=["64x64", "512x1024"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_dvis"))
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the methods')")
    parser.add_argument("--only", default=None, choices=["dvis", "discriminative"])
    parser.add_argument("--families", nargs="*", default=None, choices=sorted({f for _, f in QUALITY}))
    parser.add_argument("--seed", type=int, default=0, help="training seed (quality part)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dvis parameters (quality part)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.part == "speed":
        rows = speed(args.sizes, args.repeats)
    elif args.part == "quality":
        rows = quality(args.out, args.epochs, args.only, args.families, _overrides(args.set), args.seed)
    else:
        rows = [cuda_fps(args.repeats)]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
