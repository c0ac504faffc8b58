"""IRNet losses (Ahn, Cho & Kwak, CVPR 2019, Sec. 4.2-4.5): pairs, affinities, Eq. 5-9.

Pairs (Eq. 2): every pixel ``i`` is paired with the pixels ``j = i + o`` for
the offsets ``o`` of :func:`pair_offsets`, a half disc of radius ``gamma`` so
each unordered pair appears once (the authors' code: radius 10 -> 152 offsets,
radius 5 -> 34).  Pair maps are ``[B, P, H, W]``: entry ``[b, p, y, x]`` is the
pair ``((y, x), (y, x) + offsets[p])``; pairs whose second pixel falls outside
the image are invalid.

Pair labels (Eq. 3-4) come from a pseudo class map with ``0`` = confident
background, ``c >= 1`` = confident class ``c`` and ``255`` = not confident
(ignored): :func:`pair_labels` splits the pairs of two confident pixels into
``P+fg`` (same class >= 1), ``P+bg`` (both background) and ``P-`` (different).

Affinity (Eq. 7): ``a_ij = 1 - max_{k on the line from i to j} B(x_k)``, with
the line's pixels from :func:`line_offsets` (both end points included).

Losses, with ``delta(i, j) = D(x_i) - D(x_j)`` and ``delta_hat(i, j) = x_j - x_i``:

* Eq. 5 ``L_fg^D = mean_{P+fg} |delta - delta_hat|_1``,
* Eq. 6 ``L_bg^D = mean_{P+bg} |delta|_1``,
* Eq. 8 ``L^B = -mean_{P+fg} log a / 2 - mean_{P+bg} log a / 2 - mean_{P-} log(1 - a)``,
* Eq. 9 ``L = L_fg^D + L_bg^D + L^B``.

Choices: ``|.|`` is the L1 norm of the 2-vector (summed over the two
components; the authors' code averages them, i.e. half this value); Eq. 8 and
9 are summed as the paper writes them (the authors' code halves both the
boundary and the displacement sums).  ``log`` is taken of ``a`` clamped to
``[1e-5, 1 - 1e-5]`` (the authors' ``+ 1e-5``).  An empty pair set gives a
zero term (with a gradient of zero), so images without foreground or without
background train.  Each image of the batch counts in proportion to its pairs
(means over all pairs of the batch, as in the authors' code).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labkit.errors import LabkitError

IGNORE = 255
EPS = 1e-5


def pair_offsets(radius: int) -> torch.Tensor:
    """``[P, 2]`` int64 ``(dy, dx)`` offsets of the half disc ``dy^2 + dx^2 < radius^2``, each unordered pair once.

    ``(0, dx)`` for ``dx = 1 .. radius-1``, then ``dy = 1 .. radius-1`` with
    every ``dx`` in ``(-radius, radius)`` inside the disc (the authors' order).
    """
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 2:
        raise LabkitError(f"pair radius must be an integer >= 2, got {radius!r}")
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [
        (dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius) if dy * dy + dx * dx < radius**2
    ]
    return torch.tensor(offsets, dtype=torch.int64)


def line_offsets(dy: int, dx: int) -> list[tuple[int, int]]:
    """Pixels on the line from ``(0, 0)`` to ``(dy, dx)`` (both included), rounded, without repeats."""
    steps = max(abs(dy), abs(dx))
    if steps == 0:
        return [(0, 0)]
    points = []
    for k in range(steps + 1):
        p = (int(math.floor(k * dy / steps + 0.5)), int(math.floor(k * dx / steps + 0.5)))
        if p not in points:
            points.append(p)
    return points


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, ``fill`` where that falls outside."""
    height, width = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, yd = slice(max(dy, 0), height + min(dy, 0)), slice(max(-dy, 0), height + min(-dy, 0))
    xs, xd = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width + min(-dx, 0))
    if ys.start < ys.stop and xs.start < xs.stop:
        out[..., yd, xd] = x[..., ys, xs]
    return out


def valid_pairs(height: int, width: int, offsets: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """``[P, H, W]`` bool: the pair's second pixel lies inside the image."""
    ones = torch.ones(1, height, width, dtype=torch.bool, device=device)
    return torch.cat([_shift(ones, int(dy), int(dx), False) for dy, dx in offsets.tolist()]) if len(offsets) else \
        torch.zeros(0, height, width, dtype=torch.bool, device=device)


def pair_affinity(boundary: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Eq. 7: ``[B, P, H, W]`` affinities ``1 - max B`` on the line of each pair.

    ``boundary`` is ``[B, H, W]`` (or ``[B, 1, H, W]``) in ``[0, 1]``.  Entries of
    invalid pairs (second pixel outside) are computed on the pixels that lie
    inside and should be masked with :func:`valid_pairs`.
    """
    if boundary.ndim == 4 and boundary.shape[1] == 1:
        boundary = boundary[:, 0]
    if boundary.ndim != 3:
        raise LabkitError(f"boundary must be [B,H,W] or [B,1,H,W], got shape {tuple(boundary.shape)}")
    if len(offsets) == 0:
        return boundary.new_zeros(boundary.shape[0], 0, *boundary.shape[1:])
    # every line pixel is itself a point of the half disc: shift the map once per distinct point,
    # then take the max over each line's points (lines padded by repeating their last point)
    lines = [line_offsets(dy, dx) for dy, dx in offsets.tolist()]
    points = sorted({p for line in lines for p in line})
    where = {p: k for k, p in enumerate(points)}
    shifted = torch.stack([_shift(boundary, py, px, 0.0) for py, px in points], dim=1)  # [B, U, H, W]
    longest = max(len(line) for line in lines)
    index = torch.tensor([[where[p] for p in line] + [where[line[-1]]] * (longest - len(line)) for line in lines],
                         device=boundary.device)
    return 1.0 - shifted[:, index].amax(dim=2)


def pair_labels(label_map: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 3-4: ``(pos_fg, pos_bg, neg)``, each ``[B, P, H, W]`` bool, from a pseudo class map ``[B, H, W]``.

    ``label_map`` holds 0 (confident background), ``c >= 1`` (confident class)
    or 255 (ignored); pairs with an ignored or outside pixel belong to no set.
    """
    _check_label_map(label_map)
    src = label_map.unsqueeze(1)
    dst = torch.stack([_shift(label_map, int(dy), int(dx), IGNORE) for dy, dx in offsets.tolist()], dim=1) \
        if len(offsets) else label_map.new_zeros(label_map.shape[0], 0, *label_map.shape[1:])
    known = (src != IGNORE) & (dst != IGNORE)
    same = known & (src == dst)
    return same & (src > 0), same & (src == 0), known & (src != dst)


def _check_label_map(label_map: torch.Tensor) -> None:
    if not isinstance(label_map, torch.Tensor) or label_map.ndim != 3:
        raise LabkitError(f"the pseudo class map must be a [B,H,W] tensor, got {getattr(label_map, 'shape', label_map)}")
    if label_map.dtype.is_floating_point or label_map.dtype == torch.bool:
        raise LabkitError(f"the pseudo class map must hold integer classes, got dtype {label_map.dtype}")
    bad = (label_map < 0) | ((label_map > 254) & (label_map != IGNORE))
    if bad.any():
        raise LabkitError("the pseudo class map holds values outside 0..254 and 255 (ignore)")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def displacement_losses(
    displacement: torch.Tensor, pos_fg: torch.Tensor, pos_bg: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 and 6: ``(L_fg^D, L_bg^D)`` for a displacement field ``[B, 2, H, W]`` (``(dy, dx)`` in pixels)."""
    if displacement.ndim != 4 or displacement.shape[1] != 2:
        raise LabkitError(f"displacement must be [B,2,H,W], got shape {tuple(displacement.shape)}")
    if not torch.isfinite(displacement).all():
        raise LabkitError("displacement contains NaN or infinite values")
    # delta(i, j) = D(x_i) - D(x_j) for every pair: [B, P, 2, H, W]
    dst = torch.stack([_shift(displacement, int(dy), int(dx), 0.0) for dy, dx in offsets.tolist()], dim=1)
    delta = displacement.unsqueeze(1) - dst
    delta_hat = offsets.to(displacement)[None, :, :, None, None]
    fg = (delta - delta_hat).abs().sum(dim=2)
    bg = delta.abs().sum(dim=2)
    return _masked_mean(fg, pos_fg), _masked_mean(bg, pos_bg)


def boundary_loss(
    boundary: torch.Tensor, pos_fg: torch.Tensor, pos_bg: torch.Tensor, neg: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """Eq. 8 on a boundary map ``[B, H, W]`` (or ``[B, 1, H, W]``) of probabilities in ``[0, 1]``."""
    if not torch.isfinite(boundary).all():
        raise LabkitError("boundary contains NaN or infinite values")
    a = pair_affinity(boundary, offsets).clamp(EPS, 1 - EPS)
    return (
        _masked_mean(-torch.log(a), pos_fg) / 2
        + _masked_mean(-torch.log(a), pos_bg) / 2
        + _masked_mean(-torch.log(1 - a), neg)
    )


def irnet_loss(
    displacement: torch.Tensor, boundary_logits: torch.Tensor, label_map: torch.Tensor, radius: int
) -> dict[str, torch.Tensor]:
    """Eq. 9 and its terms: ``disp_fg`` (Eq. 5), ``disp_bg`` (Eq. 6), ``boundary`` (Eq. 8), ``loss``.

    ``displacement [B,2,H,W]`` in pixels, ``boundary_logits [B,1,H,W]`` (the
    map is their sigmoid), ``label_map [B,H,W]`` the mined pseudo classes
    (0, class, 255), pairs within ``radius`` (Eq. 2).
    """
    if boundary_logits.ndim != 4 or boundary_logits.shape[1] != 1:
        raise LabkitError(f"boundary logits must be [B,1,H,W], got shape {tuple(boundary_logits.shape)}")
    if displacement.shape[0] != label_map.shape[0] or displacement.shape[-2:] != label_map.shape[-2:] \
            or boundary_logits.shape[-2:] != label_map.shape[-2:]:
        raise LabkitError(
            f"shapes disagree: displacement {tuple(displacement.shape)}, boundary {tuple(boundary_logits.shape)}, "
            f"pseudo class map {tuple(label_map.shape)}"
        )
    offsets = pair_offsets(radius).to(label_map.device)
    pos_fg, pos_bg, neg = pair_labels(label_map, offsets)
    disp_fg, disp_bg = displacement_losses(displacement, pos_fg, pos_bg, offsets)
    bnd = boundary_loss(torch.sigmoid(boundary_logits), pos_fg, pos_bg, neg, offsets)
    return {"disp_fg": disp_fg, "disp_bg": disp_bg, "boundary": bnd, "loss": disp_fg + disp_bg + bnd}


def multilabel_soft_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The CAM network's classification loss (Sec. 3): multi-label soft margin, mean over classes and images."""
    if logits.shape != labels.shape:
        raise LabkitError(f"logits {tuple(logits.shape)} and image labels {tuple(labels.shape)} differ in shape")
    return F.multilabel_soft_margin_loss(logits, labels)


class IRNetLoss(nn.Module):
    """Module form of :func:`irnet_loss` with a fixed pair ``radius``."""

    def __init__(self, radius: int = 10) -> None:
        super().__init__()
        pair_offsets(radius)
        self.radius = radius

    def forward(
        self, displacement: torch.Tensor, boundary_logits: torch.Tensor, label_map: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return irnet_loss(displacement, boundary_logits, label_map, self.radius)
