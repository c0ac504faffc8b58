"""UNet forward+backward throughput on CPU, with a torchvision ResNet-18 reference.

Both networks run the same work in the same process: a batch of 8 RGB
128x128 images, forward, a scalar loss, backward, after warm-up iterations.
The ratio UNet / ResNet-18 images per second says how the default labkit
model compares with a familiar small network on this machine.

    python benchmarks/bench_unet.py [--batch 8] [--size 128] [--iters 5] [--warmup 2]
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision

from labkit.models import build_model


def images_per_second(model: torch.nn.Module, images: torch.Tensor, loss_fn, iters: int, warmup: int) -> float:
    """Mean forward+backward throughput over ``iters`` timed iterations."""
    model.train()
    for i in range(warmup + iters):
        if i == warmup:
            start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_fn(model(images)).backward()
    return iters * images.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size)
    unet = build_model(3, {"embedding": 8}, backbone="unet")  # width 16, depth 3 defaults
    resnet18 = torchvision.models.resnet18(weights=None)

    print(f"CPU threads: {torch.get_num_threads()}  batch {args.batch} x 3 x {args.size} x {args.size}, "
          f"{args.iters} timed iterations after {args.warmup} warm-up")
    unet_ips = images_per_second(unet, images, lambda out: out["embedding"].square().mean(), args.iters, args.warmup)
    ref_ips = images_per_second(resnet18, images, lambda out: out.square().mean(), args.iters, args.warmup)
    print(f"UNet (width 16, depth 3) forward+backward: {unet_ips:8.1f} images/s")
    print(f"torchvision resnet18     forward+backward: {ref_ips:8.1f} images/s  (reference)")
    print(f"ratio UNet / resnet18: {unet_ips / ref_ips:.2f}")


if __name__ == "__main__":
    main()
