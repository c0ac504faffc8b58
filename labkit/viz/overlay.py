"""Instance overlays and sample galleries (matplotlib).

Colours are stable: instance id ``i`` always gets the same colour (golden-ratio
hue stepping), whatever other ids are present, so a prediction and its ground
truth, or two epochs, can be compared by eye. Figures are built with
``matplotlib.figure.Figure`` (no pyplot state): they render in Jupyter and
save with any backend, Agg included.
"""
from __future__ import annotations

import colorsys
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

GOLDEN = 0.618033988749895


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def instance_colors(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """float ``[N, 3]`` RGB in ``[0, 1]``: a fixed, distinct-looking colour per instance id."""
    out = np.empty((len(ids), 3), dtype=np.float32)
    for k, i in enumerate(np.asarray(ids, dtype=np.int64).tolist()):
        hue = (i * GOLDEN) % 1.0
        sat = 0.65 + 0.3 * ((i * 7) % 3) / 2
        val = 0.95 - 0.25 * ((i * 5) % 2)
        out[k] = colorsys.hsv_to_rgb(hue, sat, val)
    return out


def display_image(image: Any) -> np.ndarray:
    """An image as float ``[H,W,3]`` in ``[0, 1]`` for display.

    Accepts ``[C,H,W]`` (the sample layout), ``[H,W]`` or ``[H,W,3]``; one
    channel is shown grey, three as RGB, any other count as the channel mean.
    """
    arr = _numpy(image).astype(np.float32)
    if arr.ndim == 3 and arr.shape[0] not in (1, 3) and arr.shape[-1] == 3:
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"cannot display an image of shape {arr.shape}")
    if arr.shape[0] != 3:
        arr = np.repeat(arr.mean(axis=0, keepdims=True), 3, axis=0)
    return np.clip(np.moveaxis(arr, 0, -1), 0.0, 1.0)


def boundaries(instances: Any) -> np.ndarray:
    """bool ``[H,W]``: pixels of an instance with a 4-neighbour of a different id."""
    inst = _numpy(instances)
    edge = np.zeros(inst.shape, dtype=bool)
    dy = inst[1:, :] != inst[:-1, :]
    dx = inst[:, 1:] != inst[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge & (inst > 0)


def blend(image: Any, instances: Any, alpha: float = 0.5, outline: bool = True) -> np.ndarray:
    """float ``[H,W,3]``: ``image`` with each instance tinted by its colour and outlined."""
    rgb = display_image(image)
    inst = _numpy(instances).astype(np.int64)
    if inst.shape != rgb.shape[:2]:
        raise ValueError(f"image size {rgb.shape[:2]} does not match instance map size {inst.shape}")
    ids, inverse = np.unique(inst, return_inverse=True)
    colors = instance_colors(ids)
    colors[ids == 0] = 0.0
    tint = colors[inverse.reshape(inst.shape)]
    fg = (inst > 0)[..., None]
    out = np.where(fg, (1 - alpha) * rgb + alpha * tint, rgb)
    if outline:
        edge = boundaries(inst)
        out[edge] = tint[edge]
    return out


def overlay(
    image: Any, instances: Any, alpha: float = 0.5, ax: Optional[Axes] = None,
    outline: bool = True, title: Optional[str] = None,
) -> Axes:
    """Draw ``image`` with instance colours and boundaries on ``ax`` (a new figure if None)."""
    if ax is None:
        ax = Figure(figsize=(4, 4)).subplots()
    ax.imshow(blend(image, instances, alpha=alpha, outline=outline), interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def _title(sample: Mapping[str, Any], index: int, key: str) -> str:
    inst = _numpy(sample[key])
    n = len(np.unique(inst[inst > 0]))
    return f"{sample.get('name', index)} ({n} inst.)"


def gallery(
    samples: Sequence[Mapping[str, Any]], ncols: int = 4, alpha: float = 0.5, key: str = "instances",
    titles: Optional[Sequence[str]] = None, panel_size: float = 2.5, outline: bool = True,
) -> Figure:
    """A grid of samples, each its ``image`` overlaid with ``sample[key]``; returns the Figure.

    Titles default to the sample's name and its number of instances.
    """
    if not samples:
        raise ValueError("gallery needs at least one sample")
    ncols = max(1, min(ncols, len(samples)))
    nrows = math.ceil(len(samples) / ncols)
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows + 0.3 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        if k >= len(samples):
            ax.set_axis_off()
            continue
        sample = samples[k]
        title = titles[k] if titles is not None else _title(sample, k, key)
        overlay(sample["image"], sample[key], alpha=alpha, ax=ax, outline=outline, title=title)
    return fig
