"""UNet forward+backward throughput on CPU, with a torchvision ResNet-18 reference.

Both networks run the same work in the same process: a batch of 8 RGB
128x128 images, forward, a scalar loss, backward, after warm-up iterations.
Timed rounds alternate between the two networks and the medians are
reported, so load from other processes on a shared machine hits both alike.
The ratio UNet / ResNet-18 images per second says how the default labkit
model compares with a familiar small network on this machine.

    python benchmarks/bench_unet.py [--batch 8] [--size 128] [--iters 3] [--rounds 3] [--warmup 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from labkit.models import build_model


def step(model: torch.nn.Module, images: torch.Tensor, loss_fn) -> None:
    model.zero_grad(set_to_none=True)
    loss_fn(model(images)).backward()


def images_per_second(model: torch.nn.Module, images: torch.Tensor, loss_fn, iters: int) -> float:
    """Forward+backward throughput over ``iters`` timed iterations."""
    start = time.perf_counter()
    for _ in range(iters):
        step(model, images, loss_fn)
    return iters * images.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size)
    benches = {
        "UNet (width 16, depth 3)": (build_model(3, {"embedding": 8}), lambda out: out["embedding"].square().mean()),
        "torchvision resnet18": (torchvision.models.resnet18(weights=None), lambda out: out.square().mean()),
    }
    print(f"CPU threads: {torch.get_num_threads()}  batch {args.batch} x 3 x {args.size} x {args.size}, "
          f"{args.rounds} alternating rounds of {args.iters} timed iterations after {args.warmup} warm-up")
    speeds: dict[str, list[float]] = {name: [] for name in benches}
    for model, loss_fn in benches.values():
        model.train()
        for _ in range(args.warmup):
            step(model, images, loss_fn)
    for _ in range(args.rounds):
        for name, (model, loss_fn) in benches.items():
            speeds[name].append(images_per_second(model, images, loss_fn, args.iters))
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    for name, median in medians.items():
        print(f"{name:26s} forward+backward: {median:6.1f} images/s "
              f"(median; rounds {min(speeds[name]):.1f}-{max(speeds[name]):.1f})")
    unet, reference = medians.values()
    print(f"ratio UNet / resnet18: {unet / reference:.2f}")


if __name__ == "__main__":
    main()
