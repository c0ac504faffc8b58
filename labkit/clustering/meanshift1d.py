"""Exact flat-kernel mean shift of scalar values at several bandwidths (DVIS, Sec. 4 "Discretization").

DVIS predicts one real-valued instance label per pixel and discretises it with
mean shift at bandwidths 0.9 and 0.4. In one dimension the flat-kernel mean
of a window ``[m - h, m + h]`` comes from a cumulative histogram at data
resolution: the values sorted once, with prefix sums, give the count and sum
of any window by two binary searches. Every seed then moves in
``O(log N)`` per step, all seeds at once, and the sort is shared by all
bandwidths. The result is exactly scikit-learn's ``MeanShift`` on
``values[:, None]`` with the same seeding (up to float64 rounding): bin seeds
(``seeding="bins"``, the grid ``round(v / h)``, scikit-learn's
``bin_seeding=True``) or every distinct value (``seeding="all"``), the same
stopping rule (a seed moving by at most ``1e-3 h``), modes merged by decreasing
intensity within ``h``, every value labelled by its nearest mode.
"""
from __future__ import annotations

from typing import Any, Sequence, overload

import numpy as np
import torch
from torch import Tensor

from labkit.clustering._common import check_bandwidth
from labkit.errors import DataError


@overload
def mean_shift_1d(values: Any, bandwidths: float, **kw: Any) -> tuple[Any, Any]: ...
@overload
def mean_shift_1d(values: Any, bandwidths: Sequence[float], **kw: Any) -> list[tuple[Any, Any]]: ...


def mean_shift_1d(
    values: Any,
    bandwidths: float | Sequence[float],
    *,
    mask: Any = None,
    seeding: str = "bins",
    max_iter: int = 300,
) -> tuple[Any, Any] | list[tuple[Any, Any]]:
    """Mean shift of the scalar ``values`` (any shape) at each bandwidth.

    Returns ``(centers [K], labels)`` for one bandwidth, a list of them for a
    sequence. ``labels`` has the shape of ``values``: ``0..K-1`` by decreasing
    mode intensity, ``-1`` where ``mask`` (bool, same shape) is False. numpy
    in, numpy out; tensor in, tensor out (same device).
    """
    single = np.isscalar(bandwidths) or (isinstance(bandwidths, Tensor) and bandwidths.ndim == 0)
    widths = [check_bandwidth(h) for h in ([bandwidths] if single else list(bandwidths))]
    if seeding not in ("bins", "all"):
        raise DataError(f"seeding must be 'bins' or 'all', got {seeding!r}")
    is_tensor = isinstance(values, Tensor)
    v = values.detach() if is_tensor else torch.as_tensor(np.asarray(values))
    shape, device = v.shape, v.device
    v = v.reshape(-1).to(torch.float64)
    if mask is not None:
        m = (mask.detach() if isinstance(mask, Tensor) else torch.as_tensor(np.asarray(mask))).to(device)
        if m.shape != shape:
            raise DataError(f"mask shape {tuple(m.shape)} does not match values shape {tuple(shape)}")
        keep = m.reshape(-1).bool()
    else:
        keep = torch.ones(len(v), dtype=torch.bool, device=device)
    if not bool(torch.isfinite(v[keep]).all()):
        raise DataError("mean_shift_1d: values contain NaN or infinite entries")
    sorted_v, _ = torch.sort(v[keep])
    prefix = torch.cat([sorted_v.new_zeros(1), torch.cumsum(sorted_v, 0)])
    results = []
    for h in widths:
        centers, labels = _one_bandwidth(v, keep, sorted_v, prefix, h, seeding, max_iter)
        labels = labels.reshape(shape)
        out_dtype = values.dtype if is_tensor and values.is_floating_point() else torch.float64
        centers = centers.to(out_dtype)
        results.append((centers, labels) if is_tensor else (centers.cpu().numpy(), labels.cpu().numpy()))
    return results[0] if single else results


def _window(sorted_v: Tensor, prefix: Tensor, m: Tensor, h: float) -> tuple[Tensor, Tensor]:
    """Count and sum of the values within ``[m - h, m + h]`` (inclusive, like scikit-learn's radius query)."""
    lo = torch.searchsorted(sorted_v, m - h, right=False)
    hi = torch.searchsorted(sorted_v, m + h, right=True)
    return (hi - lo).to(sorted_v.dtype), prefix[hi] - prefix[lo]


def _one_bandwidth(
    v: Tensor, keep: Tensor, sorted_v: Tensor, prefix: Tensor, h: float, seeding: str, max_iter: int
) -> tuple[Tensor, Tensor]:
    labels = torch.full(v.shape, -1, dtype=torch.int64, device=v.device)
    if len(sorted_v) == 0:
        return sorted_v.new_zeros(0), labels
    if seeding == "bins":
        seeds = torch.unique(torch.round(sorted_v / h)) * h
        if len(seeds) == len(sorted_v):  # binning did not compress: every value (scikit-learn's rule)
            seeds = sorted_v.clone()
    else:
        seeds = torch.unique(sorted_v)
    intensity = torch.zeros_like(seeds)
    active = torch.ones(len(seeds), dtype=torch.bool, device=seeds.device)
    for it in range(max_iter + 1):
        idx = active.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        count, total = _window(sorted_v, prefix, seeds[idx], h)
        found = count > 0
        new = torch.where(found, total / count.clamp_min(1), seeds[idx])
        moved = (new - seeds[idx]).abs()
        seeds[idx], intensity[idx] = new, count
        active[idx] = found & (moved > 1e-3 * h) & (it < max_iter)
        keep_seed = intensity > 0
        keep_seed[idx[~found]] = False
        seeds, intensity, active = seeds[keep_seed], intensity[keep_seed], active[keep_seed]
    if len(seeds) == 0:
        raise DataError(f"mean_shift_1d: no value within bandwidth {h:g} of any seed")
    centers = _merge(seeds, intensity, h)
    fg = v[keep]
    order = torch.argsort(centers)
    ordered = centers[order]
    right = torch.searchsorted(ordered, fg).clamp(max=len(ordered) - 1)
    left = (right - 1).clamp(min=0)
    pick = torch.where((fg - ordered[left]).abs() <= (ordered[right] - fg).abs(), left, right)
    labels[keep] = order[pick]
    return centers, labels


def _merge(seeds: Tensor, intensity: Tensor, h: float) -> Tensor:
    """scikit-learn's suppression: by decreasing (intensity, value), a mode removes the modes within ``h``."""
    s, c = seeds.cpu().numpy(), intensity.cpu().numpy()
    order = np.lexsort((s, c))[::-1]
    s = s[order]
    kept = np.ones(len(s), dtype=bool)
    for i in range(len(s)):
        if kept[i]:
            kept[np.abs(s - s[i]) <= h] = False
            kept[i] = True
    return seeds.new_tensor(s[kept])
