"""DVIS discretisation (Sec. 4, "Discretization to instance segmentation"): label map -> candidate instances.

DVIS predicts one non-negative real value ``f`` per pixel; an instance is a
plateau of equal value (training pushes foreground to at least ``m1 = 2``
and different instances at least ``m2 = 1`` apart).  Discretisation:

1. foreground = pixels with ``f > fg_threshold`` (the binary term drives
   background to 0 and foreground to ``>= m1``; the midpoint ``m1 / 2`` is
   the method's default);
2. 1-D flat-kernel mean shift of the foreground values at each bandwidth
   (paper: 0.9 and 0.4; :func:`labkit.clustering.mean_shift_1d`): 0.9 keeps
   apart values the network put 1 apart, 0.4 splits instances it did not
   separate well enough.  Every distinct value (on a grid of 1/40 of the
   smallest bandwidth) seeds a mode, as when every pixel's value is shifted:
   grid seeds at the bandwidth (scikit-learn's ``bin_seeding``) would start
   between two plateaus 1 apart and, with a flat kernel of radius 0.9 that
   reaches both, stay there (modes at 2.5 and 3.5 for plateaus at 2, 3, 4);
3. every cluster is split into its spatially connected pieces (8-connected):
   two objects far apart may share a value, since the pairwise term only
   compares pixels within its window.  With ``piece_gap = g > 0`` the
   pieces of a cluster that lie within about ``2 g`` pixels of each other
   (joined once each is dilated by a disk of radius ``g``) also give one
   candidate together, beside the separate pieces: an
   object that another one crosses on top (a stick under a stick) is cut in
   two pieces of one value, which neither piece matches (ours, not in the
   paper, which has no step 3; the verification head picks between the two).
   With ``edge_threshold = t``, a cluster is also cut where the label map
   jumps: pixels whose 3x3 neighbourhood spans more than ``t`` are left out,
   the rest split into connected pieces, and each left-out pixel then joins
   the nearest piece if that piece is of its own cluster (ours; otherwise
   it stays out: a rim pixel where two clusters meet).  The Mumford-Shah term
   (Eq. 7) makes the map smooth inside an instance and lets it jump only at
   edges, so two touching objects whose values ended up too close for the
   mean shift are still parted by the step between them;
4. pieces smaller than ``min_area`` pixels or with a mean value below
   ``min_mean`` are dropped ("small and low-valued candidates"; the authors'
   code: mean value > 0.3 and a minimum area), and with ``min_radius = r >
   0`` pieces thinner than ``r`` (:func:`labkit.clustering.thin.instance_radii`,
   measured against the other pieces and the background; ours): where the
   map steps from one object's value to a touching one's, the pixels of the
   step take values in between and can form a thin cluster of their own;
5. the candidates of all bandwidths are pooled, the first bandwidth's first,
   and a candidate whose mask overlaps an earlier one with IoU >=
   ``duplicate_iou`` is removed as a duplicate.

The authors' code runs 4 mean-shift iterations in a spatial window as
convolutions; we use the exact 1-D mean shift of the paper's text over the
whole image (no spatial window) and recover spatial separation by step 3.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.measure import label as connected_label
from skimage.morphology import disk
from skimage.segmentation import expand_labels
from torch import Tensor

from labkit.clustering.meanshift1d import mean_shift_1d
from labkit.clustering.thin import instance_radii
from labkit.errors import DataError, LabkitError


@dataclasses.dataclass
class Candidates:
    """Candidate instances of one label map.

    ``masks`` bool ``[N,H,W]`` (may overlap across bandwidths), ``values``
    (mean label value) ``[N]``, ``areas`` ``[N]``, ``levels`` (index of the
    bandwidth that produced it) ``[N]``, ``boxes`` float ``[N,4]`` as
    ``(x1, y1, x2, y2)`` pixel-edge coordinates (for ``roi_align``), and
    ``label_maps`` the connected-piece map of every bandwidth (int64
    ``[H,W]``, 0 = background or dropped, before duplicate removal), for display.
    """

    masks: Tensor
    values: Tensor
    areas: Tensor
    levels: Tensor
    boxes: Tensor
    label_maps: list[Tensor]

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def discretize(
    label_map: Any,
    bandwidths: Sequence[float] = (0.9, 0.4),
    *,
    fg_threshold: float = 1.0,
    min_area: int = 8,
    min_mean: float | None = None,
    duplicate_iou: float = 0.9,
    max_candidates: int | None = None,
    piece_gap: int = 0,
    edge_threshold: float | None = None,
    min_radius: float = 0.0,
) -> Candidates:
    """The candidate instances of one label map ``[H,W]`` (steps 1-5 of the module docstring).

    ``min_mean`` defaults to ``fg_threshold``; ``max_candidates`` keeps the
    largest ones (authors' code: top 40 on VOC, 20 on COCO, by area).
    """
    f = label_map.detach().float().cpu() if isinstance(label_map, Tensor) else torch.as_tensor(
        np.asarray(label_map, dtype=np.float32))
    if f.dim() == 3 and f.shape[0] == 1:
        f = f[0]
    if f.dim() != 2:
        raise DataError(f"discretize expects one label map [H,W], got shape {tuple(f.shape)}")
    if not bool(torch.isfinite(f).all()):
        raise DataError("discretize: the label map contains NaN or infinite values")
    widths = [float(b) for b in ([bandwidths] if np.isscalar(bandwidths) else bandwidths)]
    if not widths or any(not b > 0 for b in widths):
        raise LabkitError(f"bandwidths must be one or more positive numbers, got {bandwidths!r}")
    if int(min_area) < 1:
        raise LabkitError(f"min_area must be >= 1, got {min_area}")
    if not 0 < duplicate_iou <= 1:
        raise LabkitError(f"duplicate_iou must be in (0, 1], got {duplicate_iou}")
    if max_candidates is not None and int(max_candidates) < 1:
        raise LabkitError(f"max_candidates must be >= 1 or None, got {max_candidates}")
    if int(piece_gap) < 0:
        raise LabkitError(f"piece_gap must be >= 0, got {piece_gap}")
    if edge_threshold is not None and not float(edge_threshold) > 0:
        raise LabkitError(f"edge_threshold must be > 0 or None, got {edge_threshold}")
    if not float(min_radius) >= 0:
        raise LabkitError(f"min_radius must be >= 0, got {min_radius}")
    min_mean = float(fg_threshold if min_mean is None else min_mean)
    height, width = f.shape
    fg = f > fg_threshold
    if not bool(fg.any()):
        return _empty(height, width, len(widths))
    values = f.numpy().astype(np.float64)
    step = min(widths) / 40  # seeds: every distinct value on this grid (a pixel's value moves, as in the paper)
    levels_out = mean_shift_1d(np.round(values / step) * step, widths, mask=fg.numpy(), seeding="all")
    maps: list[np.ndarray] = []
    kept_maps: list[np.ndarray] = []  # per piece map: restricted to the candidates kept
    counts: list[np.ndarray] = []
    picked: list[tuple[int, int, int, int, float]] = []  # (piece map, level, piece id, area, mean value)
    labellings = []  # (level, piece map, shown in label_maps): each bandwidth's pieces, then its joined ones
    edge = None if edge_threshold is None else (
        ndimage.maximum_filter(values, 3) - ndimage.minimum_filter(values, 3) > float(edge_threshold))
    for level, (_, clusters) in enumerate(levels_out):
        pieces = _connected_pieces(clusters, edge)
        labellings.append((level, pieces, True))
        if int(piece_gap) > 0:
            labellings.append((level, _bridged_pieces(clusters, int(piece_gap)), False))
    for index, (level, pieces, shown) in enumerate(labellings):
        n = int(pieces.max())
        flat = pieces.ravel()
        area = np.bincount(flat, minlength=n + 1)
        mean = np.bincount(flat, weights=values.ravel(), minlength=n + 1) / np.maximum(area, 1)
        good = (area >= int(min_area)) & (mean >= min_mean)
        good[0] = False
        if float(min_radius) > 0:
            ids, radii = instance_radii(pieces)
            good[ids[radii < float(min_radius)]] = False
        keep = good.copy()
        for prev, prev_area in zip(kept_maps, counts):
            m = int(prev.max())
            if m == 0 or not keep.any():
                continue
            joint = np.bincount(flat * (m + 1) + prev.ravel(), minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
            inter = joint[:, 1:]
            union = area[:, None] + prev_area[None, 1:m + 1] - inter
            keep &= ~(inter >= duplicate_iou * union).any(axis=1)
        if shown:  # a bandwidth's own pieces, for display
            maps.append(np.where(good[pieces], pieces, 0))
        kept_maps.append(np.where(keep[pieces], pieces, 0))
        counts.append(area)
        picked.extend((index, level, int(i), int(area[i]), float(mean[i])) for i in np.nonzero(keep)[0])
    if not picked:
        return _empty(height, width, len(widths), [torch.from_numpy(m) for m in maps])
    if max_candidates is not None and len(picked) > int(max_candidates):
        order = np.argsort([-a for _, _, _, a, _ in picked], kind="stable")[: int(max_candidates)]
        picked = [picked[i] for i in sorted(order)]
    masks = np.stack([kept_maps[k] == i for k, _, i, _, _ in picked])
    boxes = []
    slices = [ndimage.find_objects(k) for k in kept_maps]
    for k, _, i, _, _ in picked:
        sy, sx = slices[k][i - 1]
        boxes.append([sx.start, sy.start, sx.stop, sy.stop])
    areas = np.array([a for _, _, _, a, _ in picked])
    vals = np.array([v for _, _, _, _, v in picked])
    x1, y1, x2, y2 = np.array(boxes, dtype=np.float64).T
    return Candidates(
        masks=torch.from_numpy(masks),
        values=torch.from_numpy(vals).float(),
        areas=torch.from_numpy(areas).long(),
        levels=torch.tensor([lv for _, lv, _, _, _ in picked], dtype=torch.int64),
        boxes=torch.from_numpy(np.stack([x1, y1, x2, y2], axis=1)).float(),
        label_maps=[torch.from_numpy(m) for m in maps],
    )


def _connected_pieces(clusters: np.ndarray, edge: np.ndarray | None) -> np.ndarray:
    """Piece map (0 = background) of a cluster map (-1 = background): 8-connected pieces, cut along ``edge``.

    With ``edge``, pieces are formed without the edge pixels; each then joins the
    nearest piece when that piece is of its own cluster, else it stays background.
    """
    if edge is None:
        return connected_label(clusters + 1, background=0, connectivity=2).astype(np.int64)
    core = connected_label(np.where(edge, -1, clusters) + 1, background=0, connectivity=2).astype(np.int64)
    cluster_of = np.full(int(core.max()) + 1, -1, dtype=np.int64)
    cluster_of[core[core > 0]] = clusters[core > 0]
    grown = expand_labels(core, distance=sum(core.shape))
    return np.where((clusters >= 0) & (cluster_of[grown] == clusters), grown, 0)


def _bridged_pieces(clusters: np.ndarray, gap: int) -> np.ndarray:
    """Piece map (0 = background): a cluster's pieces that dilation by a disk of radius ``gap`` joins are one."""
    structure = disk(gap).astype(bool)
    out = np.zeros(clusters.shape, dtype=np.int64)
    offset = 0
    height, width = clusters.shape
    for index, box in enumerate(ndimage.find_objects(clusters + 1)):  # each cluster within its box, widened by gap
        if box is None:
            continue
        rows = slice(max(box[0].start - gap, 0), min(box[0].stop + gap, height))
        cols = slice(max(box[1].start - gap, 0), min(box[1].stop + gap, width))
        member = clusters[rows, cols] == index
        joined, n = ndimage.label(ndimage.binary_dilation(member, structure=structure), structure=np.ones((3, 3)))
        out[rows, cols][member] = joined[member] + offset
        offset += n
    return out


def _empty(height: int, width: int, levels: int, maps: list[Tensor] | None = None) -> Candidates:
    return Candidates(
        masks=torch.zeros(0, height, width, dtype=torch.bool),
        values=torch.zeros(0),
        areas=torch.zeros(0, dtype=torch.int64),
        levels=torch.zeros(0, dtype=torch.int64),
        boxes=torch.zeros(0, 4),
        label_maps=maps or [torch.zeros(height, width, dtype=torch.int64) for _ in range(levels)],
    )
