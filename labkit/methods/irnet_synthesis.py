"""IRNet pseudo labels (Ahn et al. 2019, Sec. 5 and Table 1): CAMs -> instance and semantic maps.

Three modes, the rows of the paper's Table 1:

* ``"cam"``: the CAMs themselves, thresholded at the background level and cut
  into connected components (the paper's "CAM" row);
* ``"cam_boundary"``: the class CAMs propagated by the random walk over the
  class-boundary affinities (Eq. 12-13) before the same thresholding
  ("CAM + Class Boundary"); its semantic map is Table 2's propagated labels;
* ``"irnet"``: the full method.  The displacement field gives a class-agnostic
  instance map I (Sec. 5.1, :mod:`labkit.clustering.displacement`), each class
  CAM is cut into instance-wise CAMs ``M_ck = M_c [I = k]`` (Eq. 11), every
  one is propagated by the random walk (Eq. 13, with the boundary penalty
  ``(1 - B)``), and every pixel takes the (class, instance) of its highest score.
  Instances of I smaller than ``min_area_fraction`` of the image get no
  instance-wise CAM (ours: an untrained field has hundreds of centroids, and
  each one would cost a walk).

After the walk the scores are divided by their global maximum and a
background channel at ``bg_level`` (0.25, the authors' code) joins them
before the arg-max (the paper: "less than bottom 25%" is background).  Each
channel's pixels are cut into 4-connected pieces, one instance each, scored
by the maximum score inside (Sec. 6.2: "the maximum class score within its
mask").  The authors give pieces under 1% of the image a score of 0; here they
are dropped (``min_area_fraction``), so they never become training targets.

The paper runs all of this on stride-4 maps.  ``stride`` does the same here:
the CAMs and the displacement field are average-pooled (the field also
divided by the stride, so it stays in pixels of the map), the boundary map
max-pooled (a one-pixel boundary survives), the refinement, centroids and
random walk run on the small maps, and the walked scores are upsampled
bilinearly before the arg-max and the pieces, which are cut at full
resolution.  ``radius`` and ``centroid_threshold`` stay in full-resolution
pixels (divided by the stride internally; the radius at least 2), so tuned
values keep their meaning.  ``stride=None`` picks the smallest power of two
that leaves at most :data:`WALK_PIXELS` pixels: 1 for the 64 x 64 synthetic
scenes and up to 128 x 256 images, 2 at 256 x 256, 4 at 512 x 1024.  The
walk costs ``steps x pixels x neighbours`` per channel, so stride 4 costs
about 1/16 of stride 1 (benchmarks/RESULTS.md, ``bench_speed.py``).  Mode
``"cam"`` has no walk and always works at full resolution.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from labkit.clustering.displacement import instance_map
from labkit.clustering.random_walk import propagate
from labkit.errors import LabkitError

MODES = ("cam", "cam_boundary", "irnet")
#: most pixels the walk runs on when the stride is chosen automatically (128 x 256)
WALK_PIXELS = 128 * 256


def walk_stride(height: int, width: int, max_pixels: int = WALK_PIXELS) -> int:
    """The smallest power of two ``s`` with ``ceil(H / s) * ceil(W / s) <= max_pixels``."""
    stride = 1
    while math.ceil(height / stride) * math.ceil(width / stride) > max_pixels:
        stride *= 2
    return stride


def downsample_maps(
    cams: torch.Tensor, boundary: torch.Tensor | None, displacement: torch.Tensor | None, stride: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The maps at ``stride``: CAMs averaged, boundary max-pooled, displacement averaged and divided by ``stride``."""
    if stride == 1:
        return cams, boundary, displacement
    pool = dict(kernel_size=stride, ceil_mode=True)
    cams = F.avg_pool2d(cams[None], **pool)[0]
    boundary = None if boundary is None else F.max_pool2d(boundary[None, None], **pool)[0, 0]
    displacement = None if displacement is None else F.avg_pool2d(displacement[None], **pool)[0] / stride
    return cams, boundary, displacement


def synthesize(
    cams: torch.Tensor,
    boundary: torch.Tensor | None = None,
    displacement: torch.Tensor | None = None,
    *,
    mode: str = "irnet",
    radius: int = 5,
    beta: float = 10.0,
    steps: int = 256,
    bg_level: float = 0.25,
    refine_steps: int = 100,
    centroid_threshold: float = 2.5,
    min_area_fraction: float = 0.01,
    stride: int | None = None,
) -> dict[str, torch.Tensor]:
    """One image's pseudo labels as a prediction dict (``instances``, ``ids``, ``classes``, ``scores``, ``semantic``).

    ``cams [K, H, W]`` are the normalised CAMs of the classes ``1..K`` (zero
    for classes absent from the image), ``boundary [H, W]`` the class-boundary
    probabilities (modes ``cam_boundary`` and ``irnet``), ``displacement
    [2, H, W]`` the field in pixels (mode ``irnet``).  ``stride``: the maps'
    stride for the walk and the centroids (None: :func:`walk_stride`).
    """
    if mode not in MODES:
        raise LabkitError(f"unknown pseudo-label mode {mode!r}; choices: {', '.join(MODES)}")
    if cams.ndim != 3:
        raise LabkitError(f"cams must be [K,H,W], got shape {tuple(cams.shape)}")
    if not 0 < bg_level < 1:
        raise LabkitError(f"bg_level must be in (0, 1), got {bg_level}")
    height, width = cams.shape[-2:]
    if mode != "cam" and (boundary is None or tuple(boundary.shape) != (height, width)):
        raise LabkitError(f"mode {mode!r} needs a boundary map of shape {(height, width)}")
    if mode == "irnet" and (displacement is None or tuple(displacement.shape) != (2, height, width)):
        raise LabkitError(f"mode 'irnet' needs a displacement field of shape {(2, height, width)}")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
        raise LabkitError(f"stride must be an integer >= 1, got {stride!r}")
    if mode == "cam":  # no walk, no centroids: the CAMs are cut as they are
        stride = 1
    elif stride is None:
        stride = walk_stride(height, width)
    cams, boundary, displacement = downsample_maps(
        cams.float().cpu(), None if boundary is None else boundary.float().cpu(),
        None if displacement is None else displacement.float().cpu(), stride,
    )
    present = [c for c in range(cams.shape[0]) if float(cams[c].max()) > 0]
    walk = dict(radius=max(2, round(radius / stride)), beta=beta, steps=steps)
    if mode == "irnet":
        inst, _, _ = instance_map(displacement, refine_steps, centroid_threshold / stride)
        ids, sizes = inst.unique(return_counts=True)
        # instances of I smaller than the smallest kept piece would only give dropped pieces; their pixels
        # keep no seed (the walk fills them from their neighbours), which bounds the channels to walk
        kept = ids[(sizes >= max(min_area_fraction * inst.numel(), 1)) & (ids > 0)].tolist()
        seeds, channel_class = [], []
        for c in present:
            for k in kept:
                seed = cams[c] * (inst == k)
                if float(seed.max()) > 0:
                    seeds.append(seed)
                    channel_class.append(c + 1)
    else:
        seeds = [cams[c] for c in present]
        channel_class = [c + 1 for c in present]
    if not seeds:
        return _empty(height, width)
    scores = torch.stack(seeds)
    if mode != "cam":
        scores = propagate(scores, boundary, **walk)
        peak = scores.max()
        scores = scores / peak if peak > 0 else scores
    if stride > 1:
        scores = F.interpolate(scores[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return labels_from_scores(scores, torch.tensor(channel_class), bg_level, min_area_fraction)


def labels_from_scores(
    scores: torch.Tensor, channel_class: torch.Tensor, bg_level: float = 0.25, min_area_fraction: float = 0.01
) -> dict[str, torch.Tensor]:
    """Arg-max over ``[bg_level, scores [N, H, W]]``, 4-connected pieces, max score inside; the prediction dict."""
    height, width = scores.shape[-2:]
    stacked = torch.cat([torch.full((1, height, width), float(bg_level)), scores.float()])
    winner = stacked.argmax(dim=0)
    classes_map = torch.cat([torch.zeros(1, dtype=torch.int64), channel_class.long()])
    semantic = classes_map[winner]
    instances = np.zeros((height, width), dtype=np.int64)
    ids, classes, confidences = [], [], []
    min_area = min_area_fraction * height * width
    winner_np = winner.numpy()
    for ch in range(1, len(stacked)):
        pieces, count = ndimage.label(winner_np == ch)
        for piece in range(1, count + 1):
            mask = pieces == piece
            if mask.sum() < min_area:
                continue
            new_id = len(ids) + 1
            instances[mask] = new_id
            ids.append(new_id)
            classes.append(int(classes_map[ch]))
            confidences.append(float(stacked[ch][torch.from_numpy(mask)].max()))
    semantic = torch.where(torch.from_numpy(instances) > 0, semantic, torch.zeros_like(semantic))
    return {
        "instances": torch.from_numpy(instances),
        "ids": torch.tensor(ids, dtype=torch.int64),
        "classes": torch.tensor(classes, dtype=torch.int64),
        "scores": torch.tensor(confidences, dtype=torch.float32),
        "semantic": semantic,
    }


def _empty(height: int, width: int) -> dict[str, torch.Tensor]:
    return {
        "instances": torch.zeros(height, width, dtype=torch.int64),
        "ids": torch.zeros(0, dtype=torch.int64),
        "classes": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0, dtype=torch.float32),
        "semantic": torch.zeros(height, width, dtype=torch.int64),
    }
