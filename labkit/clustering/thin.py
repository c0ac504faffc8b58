"""Thin instances: how thick each instance of a label map is, and giving the thin ones to their neighbours."""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import expand_labels, find_boundaries
from torch import Tensor

from labkit.errors import LabkitError


def instance_radii(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, radii)``: every instance of ``labels [H,W]`` (0 = none) and its radius, in pixels.

    An instance's radius is the largest distance from one of its pixels to
    its outline, plus one: a one-pixel line has radius 1, a band ``2r - 1``
    pixels wide radius ``r``, a disk of radius ``r`` about ``r``.  The
    outline is where the instance meets another label or the background
    (4-neighbours), not the image border: an object cut by the border is
    measured from its visible outline only, so a cut-off cap is not taken
    for a band.
    """
    labels = np.asarray(labels)
    ids = np.unique(labels[labels > 0])
    if not len(ids):
        return ids, np.zeros(0)
    inner = (labels > 0) & ~find_boundaries(labels, mode="inner")
    depth = ndimage.distance_transform_edt(inner) + (labels > 0)
    return ids, np.asarray(ndimage.maximum(depth, labels, ids), dtype=np.float64)


def absorb_thin_instances(labels: Tensor, min_radius: float) -> Tensor:
    """Give the pixels of every instance thinner than ``min_radius`` to the nearest other instance.

    Instances whose radius (:func:`instance_radii`) is below ``min_radius`` are
    removed, and each of their pixels joins the nearest remaining instance
    within ``2 * min_radius`` pixels (:func:`skimage.segmentation.expand_labels`);
    pixels with none that close become background.

    Why: mean shift moves the pixels on the border between two touching
    objects, whose embeddings lie between the two objects', more slowly than
    the others; they can converge to a mode of their own and come out as a
    thin band between the two objects, a false positive the size of a small
    object (``min_area`` cannot tell them apart).  Ours, not in the papers.

    ``labels`` int ``[H,W]`` (0 = none); returns the new map (same ids, thin
    ones gone).
    """
    if not min_radius >= 0:
        raise LabkitError(f"min_radius must be >= 0, got {min_radius}")
    if min_radius == 0:
        return labels
    arr = labels.cpu().numpy()
    ids, radius = instance_radii(arr)
    thin = np.isin(arr, ids[radius < min_radius])
    if not thin.any():
        return labels
    kept = np.where(thin, 0, arr)
    grown = expand_labels(kept, distance=2 * float(min_radius))
    return torch.from_numpy(np.where(thin, grown, kept)).to(labels.device)
