"""A small UNet backbone for CPU training (Ronneberger et al. 2015, scaled down).

Normalisation is **GroupNorm**, not BatchNorm: labkit trains with batches of
1–8 images on CPU, where batch statistics are noisy, and GroupNorm behaves the
same in ``train()`` and ``eval()`` mode, so a model gives the same maps during
training, validation and inference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labkit.errors import LabkitError


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (as many as divide ``channels``)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConvBlock(nn.Sequential):
    """Two (3x3 conv -> GroupNorm -> ReLU) layers; keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            _norm(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _norm(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Encoder-decoder with skip connections; returns ``[B, width, H, W]`` features.

    ``depth`` is the number of 2x downsamplings; level ``i`` has
    ``width * 2**i`` channels. Inputs whose height or width is not a multiple
    of ``2**depth`` are padded (replicating the border) and the output is
    cropped back, so any ``H, W >= 1`` works. ``coords`` appends the
    coordinate channels of :func:`coordinate_channels` to the input.

    ``decoder=False`` keeps the encoder alone, a classification network that
    returns its deepest features (``width * 2**depth`` channels) at
    ``output_stride = 2**depth`` of the padded input;
    :class:`~labkit.models.dense.DenseModel` upsamples the heads' outputs
    (few channels, cheaper than the features) to the input size, as CAMs
    are read from a classifier's stride-16 features and upsampled (IRNet's
    stage 1).
    """

    def __init__(
        self, in_channels: int, width: int = 16, depth: int = 3, coords: bool = False, coord_scale: float = 64.0,
        decoder: bool = True,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise LabkitError(f"UNet needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        if coord_scale <= 0:
            raise LabkitError(f"coord_scale must be > 0, got {coord_scale}")
        channels = [width * 2**i for i in range(depth + 1)]
        self.coords, self.coord_scale = bool(coords), float(coord_scale)
        self.stem = ConvBlock(in_channels + 2 * self.coords, channels[0])
        self.down = nn.ModuleList(ConvBlock(channels[i], channels[i + 1]) for i in range(depth))
        self.decoder = bool(decoder)
        if self.decoder:
            self.up = nn.ModuleList(
                nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in reversed(range(depth))
            )
            self.fuse = nn.ModuleList(ConvBlock(2 * channels[i], channels[i]) for i in reversed(range(depth)))
        self.depth = depth
        self.out_channels = width if self.decoder else channels[-1]
        self.output_stride = 1 if self.decoder else 2**depth
        self.config = {"width": width, "depth": depth}
        if self.coords:
            self.config |= {"coords": True, "coord_scale": self.coord_scale}
        if not self.decoder:
            self.config["decoder"] = False

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if self.coords:
            image = torch.cat([image, coordinate_channels(image, self.coord_scale)], dim=1)
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        x = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else image
        x = self.stem(x)
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(F.max_pool2d(x, 2))
        if not self.decoder:
            return x
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips)):
            x = fuse(torch.cat([up(x), skip], dim=1))
        return x[..., :height, :width]


def coordinate_channels(image: torch.Tensor, scale: float = 64.0) -> torch.Tensor:
    """``[B, 2, H, W]``: each pixel's (row, column) offset from the image centre, in units of ``scale`` pixels."""
    batch, _, height, width = image.shape
    rows = (torch.arange(height, device=image.device, dtype=image.dtype) - (height - 1) / 2) / scale
    cols = (torch.arange(width, device=image.device, dtype=image.dtype) - (width - 1) / 2) / scale
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))
    return grid.expand(batch, 2, height, width)
