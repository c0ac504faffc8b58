"""Tiny data for the embedding-method tests (``test_methods_*``): learnable in seconds on a CPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

PALETTE = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1]])


def coloured_squares(n: int = 16, size: int = 24, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` samples with two non-overlapping 7x7 squares of two different colours on dim noise."""
    samples = []
    for i in range(n):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        image = 0.2 * torch.rand(3, size, size, generator=g)
        inst = torch.zeros(size, size, dtype=torch.int64)
        for k, c in enumerate(torch.randperm(len(PALETTE), generator=g)[:2].tolist()):
            while True:
                y, x = torch.randint(0, size - 7, (2,), generator=g).tolist()
                if (inst[y:y + 7, x:x + 7] == 0).all():
                    break
            inst[y:y + 7, x:x + 7] = k + 1
            image[:, y:y + 7, x:x + 7] = PALETTE[c][:, None, None]
        samples.append({"image": image, "instances": inst, "semantic": (inst > 0).long()})
    return samples


def microscopy_folder(root: Path, n: int = 3, size: int = 40) -> Path:
    """An instance folder of 16-bit grayscale 'cells' (bright disks) with 16-bit instance masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint16)
        for k, (cy, cx) in enumerate([(10, 10), (12, 28), (28, 14), (29, 30)], start=1):
            cy, cx = cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 100 + 7 * k
        image = rng.normal(2000, 150, (size, size))
        image[mask > 0] += 9000
        Image.fromarray(image.clip(0, 65535).astype(np.uint16)).save(root / "images" / f"cell{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"cell{i}.png")
    return root
