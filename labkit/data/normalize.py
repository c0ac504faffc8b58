"""Turn arrays read from disk into contract tensors: images to float ``[C,H,W]``, masks to int64.

Image intensities (DESIGN.md, "Data contract"):

- ``uint8``: divided by 255;
- ``uint16`` and other integer types: percentile normalisation, the 1st
  percentile maps to 0 and the 99.8th to 1, clipped to ``[0, 1]`` (whole
  image, all channels together);
- ``bool``: 0/1;
- float: kept when already inside ``[0, 1]``, otherwise percentile-normalised
  like ``uint16``.

Channels: a 2-D array is one channel; ``H,W,C`` and ``C,H,W`` with ``C`` in
1, 3, 4 are recognised (channels-last wins when ambiguous); a fourth (alpha)
channel is dropped, a 2-channel (grey + alpha) array keeps its first channel.
"""
from __future__ import annotations

import numpy as np
import torch

from labkit.errors import DataError

PERCENTILES = (1.0, 99.8)


def percentile_normalize(x: np.ndarray, lo: float = PERCENTILES[0], hi: float = PERCENTILES[1]) -> np.ndarray:
    """Map the ``lo`` and ``hi`` percentiles of ``x`` to 0 and 1, clipped to ``[0, 1]``."""
    x = x.astype(np.float32, copy=False)
    p_lo, p_hi = np.percentile(x, [lo, hi])
    if p_hi <= p_lo:  # constant image (or nearly): nothing to stretch
        return np.zeros_like(x) if p_hi <= 0 else np.clip(x / p_hi, 0.0, 1.0).astype(np.float32)
    return np.clip((x - p_lo) / (p_hi - p_lo), 0.0, 1.0).astype(np.float32)


def to_channels_last(arr: np.ndarray, where: str) -> np.ndarray:
    """``H,W`` / ``H,W,C`` / ``C,H,W`` -> ``H,W,C`` with ``C`` in {1, 3}."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise DataError(
            f"{where}: expected a 2-D image or one with 1, 3 or 4 channels, got an array of shape {arr.shape}"
        )
    channels = arr.shape[-1]
    if channels == 2:
        arr = arr[:, :, :1]  # grey + alpha
    elif channels == 4:
        arr = arr[:, :, :3]  # RGBA: drop alpha
    return arr


def image_to_tensor(arr: np.ndarray, where: str = "image") -> torch.Tensor:
    """A float32 ``[C,H,W]`` tensor in ``[0, 1]`` (C = 1 or 3) from an image array."""
    arr = to_channels_last(np.asarray(arr), where)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        out = percentile_normalize(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError(f"{where}: image contains NaN or infinite values")
        inside = arr.size == 0 or (arr.min() >= 0.0 and arr.max() <= 1.0)
        out = arr.astype(np.float32) if inside else percentile_normalize(arr)
    else:
        raise DataError(f"{where}: unsupported image data type {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(out, -1, 0)))


def labels_to_tensor(arr: np.ndarray, where: str = "mask") -> torch.Tensor:
    """An int64 ``[H,W]`` tensor of non-negative integer labels (instance ids or classes)."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:2])
    if arr.ndim != 2:
        raise DataError(f"{where}: a label mask must be a single-channel 2-D array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError(f"{where}: mask contains NaN or infinite values")
        fractional = arr != np.round(arr)
        if fractional.any():
            value = float(arr[fractional].flat[0])
            raise DataError(f"{where}: mask has non-integer value {value!r}; masks must hold integer ids")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{where}: unsupported mask data type {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise DataError(f"{where}: mask has negative value {int(out.min())}; ids must be >= 0")
    return torch.from_numpy(out)
