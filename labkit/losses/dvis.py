"""Losses of Deep Variational Instance Segmentation (DVIS, NeurIPS 2020), Sec. 3.2-3.3.

The network predicts one real value per pixel, the label map ``ReLU(f)``
(Sec. 4); an instance is a plateau of equal value.  The losses take the raw
output ``f``: Eq. (3) and (4) write the ReLU out themselves.  This matters
for the foreground half of Eq. (3), ``L_h(ReLU(m1 - f))``: on the raw ``f``
it still pulls a pixel up where the ReLU output is 0, whereas on the ReLU
output a pixel that went negative gets no gradient at all (a dead unit: on
``synthetic:shapes`` every pixel of a one-channel UNet fell to 0 within the
first epoch and stayed there).  The variational functional, Eq. (2),
is discretised into four terms, each a pure function here:

* :func:`binary_loss`, Eq. (3): background pixels to 0, foreground pixels to
  at least ``m1``: ``L_h(ReLU(f))`` where ``GT = 0``, ``L_h(ReLU(m1 - f))``
  where ``GT > 0``.  Paper: ``m1 = 2`` (the authors' code defaults to 1; we
  follow the paper).
* :func:`pairwise_loss`, Eq. (4)-(5): for a pixel pair,
  ``f_d = |ReLU(f_1) - ReLU(f_2)|``; ``L_h(f_d)`` when the ground-truth ids
  are equal, ``L_h(m2 - f_d)`` when they differ, ``m2 = 1``.  Only the
  difference of labels enters, so the loss is invariant to permuting instance
  ids.  Pairs are drawn on instance pixels only (Sec. 4: "it suffices to only
  consider the pixel pairs locating on instances"), by the stratified window
  of Sec. 4 (:func:`stratified_offsets`) or uniformly at random (Sec. 3.2).
* :func:`mumford_shah_loss`, Eq. (7): the Cauchy form of the discretised
  Mumford-Shah regulariser, ``log((f(x,y) - f(x,y+1))^2 + (f(x,y) - f(x+1,y))^2 + 1)``
  with forward differences.
* :func:`quantization_loss`: ``|f - Round(f)|`` (Eq. 2), the gradient through
  the first ``f`` only (Round is detached; its true gradient is 0 anyway).

``L_h`` is the Huber loss of Sec. 3.3, ``v^2 / (2 theta)`` for ``v < theta``,
``v - theta / 2`` otherwise, ``theta = 0.1``.  Our reading: it is applied to
non-negative arguments; for the "different" pairs of Eq. (5) we use
``L_h(ReLU(m2 - f_d))`` so that, as the text says, "there is no loss if the
difference between predicted labels on two pixels is more than 1" (the
Huber formula alone would charge ``v^2/2theta`` for negative ``v``).

Averaging: each term is a mean over its pixels (or pairs) per image, then a
mean over the images of the batch; an image without any pixel or pair for a
term contributes 0 to it (the result stays attached to the graph).  The
paper's Eq. (2) integrates; a mean is the integral up to the domain size.
Differences from the authors' code, where we follow the paper: the code
weights "different" pairs x3 and averages only pair losses above 1e-2
(``different_weight`` and ``min_pair_loss`` reproduce them; defaults 1 and 0,
every pair); ``m1 = 1`` there, ``2`` here.

Ignore pixels (``valid`` false, e.g. semantic 255) take no part in the binary
and pairwise terms; the two regularisers, which need no ground truth, run
over the whole image.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from labkit.errors import DataError, LabkitError

SAMPLINGS = ("stratified", "random")


def huber(v: Tensor, theta: float = 0.1) -> Tensor:
    """``L_h(v, theta)`` of Sec. 3.3: ``v^2/(2 theta)`` for ``v < theta``, ``v - theta/2`` otherwise."""
    if theta <= 0:
        raise LabkitError(f"the Huber threshold theta must be > 0, got {theta}")
    return torch.where(v < theta, v * v / (2 * theta), v - theta / 2)


def _check_label_map(f: Tensor) -> None:
    if not isinstance(f, Tensor) or not f.is_floating_point():
        raise DataError("the label map must be a floating-point tensor [B,H,W] or [B,1,H,W]")
    if f.dim() != 3:
        raise DataError(f"the label map must be [B,H,W] (or [B,1,H,W]), got shape {tuple(f.shape)}")
    if not bool(torch.isfinite(f).all()):
        raise DataError("the label map contains NaN or infinite values")


def _squeeze(f: Tensor) -> Tensor:
    if isinstance(f, Tensor) and f.dim() == 4:
        if f.shape[1] != 1:
            raise DataError(f"DVIS predicts one channel; the label map has {f.shape[1]} channels")
        f = f[:, 0]
    _check_label_map(f)
    return f


def _check_targets(f: Tensor, instances: Tensor, valid: Tensor | None) -> Tensor:
    if not isinstance(instances, Tensor) or instances.is_floating_point() or instances.dtype == torch.bool:
        raise DataError(f"instances must be an integer tensor, got {getattr(instances, 'dtype', type(instances))}")
    if instances.shape != f.shape:
        raise DataError(f"instances shape {tuple(instances.shape)} does not match the label map {tuple(f.shape)}")
    if bool((instances < 0).any()):
        raise DataError("instances must be >= 0 (0 = background)")
    if valid is None:
        return torch.ones_like(instances, dtype=torch.bool)
    if valid.shape != f.shape:
        raise DataError(f"valid mask shape {tuple(valid.shape)} does not match the label map {tuple(f.shape)}")
    return valid.bool()


def _check_margin(name: str, value: float) -> None:
    if not value > 0:
        raise LabkitError(f"the margin {name} must be > 0, got {value}")


def _batch_mean(per_image: list[Tensor], f: Tensor) -> Tensor:
    if not per_image:
        return f.sum() * 0.0
    return torch.stack(per_image).mean()


def binary_loss(
    f: Tensor, instances: Tensor, valid: Tensor | None = None, *, m1: float = 2.0, theta: float = 0.1
) -> Tensor:
    """Eq. (3): ``L_h(ReLU(f))`` on background, ``L_h(ReLU(m1 - f))`` on foreground, mean over valid pixels."""
    f = _squeeze(f)
    _check_margin("m1", m1)
    valid = _check_targets(f, instances, valid)
    per_pixel = torch.where(instances > 0, huber(torch.relu(m1 - f), theta), huber(torch.relu(f), theta))
    per_image = []
    for b in range(f.shape[0]):
        v = valid[b]
        per_image.append(per_pixel[b][v].mean() if bool(v.any()) else f[b].sum() * 0.0)
    return _batch_mean(per_image, f)


def stratified_offsets(window: int = 129, center: int = 8, dilation: int = 8, *, half: bool = False) -> Tensor:
    """Pixel offsets ``[N, 2]`` (dy, dx) of the stratified window of Sec. 4.

    Every offset within Chebyshev distance ``center`` of the pixel, plus the
    offsets of the rest of the ``window x window`` square (``window`` odd)
    on the grid of step ``dilation`` ("similar to dilated convolutions");
    ``(0, 0)`` excluded.  The set is symmetric (``-o`` is in it with ``o``);
    ``half=True`` keeps one of each pair (``dy > 0``, or ``dy == 0`` and
    ``dx > 0``), so that every unordered pixel pair is counted once.  Paper:
    ``window=129, center=8, dilation=8``.
    """
    for name, value, low in (("window", window, 1), ("center", center, 0), ("dilation", dilation, 1)):
        if int(value) != value or value < low:
            raise LabkitError(f"stratified sampling: {name} must be an integer >= {low}, got {value}")
    if window % 2 == 0:
        raise LabkitError(f"stratified sampling: the window must be odd (centred on the pixel), got {window}")
    if 2 * center + 1 > window:
        raise LabkitError(
            f"stratified sampling: the centre area (distance {center}, {2 * center + 1} px wide) "
            f"does not fit in the window of {window} px; need window >= 2 * center + 1"
        )
    r = window // 2
    d = torch.arange(-r, r + 1)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)
    near = (dy.abs() <= center) & (dx.abs() <= center)
    grid = (dy % dilation == 0) & (dx % dilation == 0)
    keep = (near | grid) & ~((dy == 0) & (dx == 0))
    if half:
        keep &= (dy > 0) | ((dy == 0) & (dx > 0))
    return torch.stack([dy[keep], dx[keep]], dim=1)


def _pair_terms(fa: Tensor, fb: Tensor, ida: Tensor, idb: Tensor, m2: float, theta: float,
                different_weight: float) -> Tensor:
    fd = (torch.relu(fa) - torch.relu(fb)).abs()
    same = ida == idb
    return torch.where(same, huber(fd, theta), different_weight * huber(torch.relu(m2 - fd), theta))


def pairwise_loss(
    f: Tensor,
    instances: Tensor,
    valid: Tensor | None = None,
    *,
    m2: float = 1.0,
    theta: float = 0.1,
    sampling: str = "stratified",
    window: int = 129,
    center: int = 8,
    dilation: int = 8,
    num_pairs: int = 4096,
    different_weight: float = 1.0,
    min_pair_loss: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Eq. (4)-(5) averaged over the sampled pairs of instance pixels, then over the batch.

    ``sampling="stratified"``: every pair ``(p, p + o)`` of instance pixels for
    each offset ``o`` of :func:`stratified_offsets` (one of ``o, -o``).
    ``sampling="random"``: ``num_pairs`` pairs of instance pixels drawn
    uniformly per image (with ``generator``).  ``different_weight`` scales the
    pairs of different instances (authors' code: 3; paper and default: 1).
    ``min_pair_loss > 0`` averages only the pairs whose loss exceeds it
    (authors' code: 1e-2), so the few violated pairs, such as those across the
    border of two touching objects, are not diluted by the many satisfied ones;
    an image with no such pair contributes 0.
    """
    f = _squeeze(f)
    _check_margin("m2", m2)
    if sampling not in SAMPLINGS:
        raise LabkitError(f"unknown pair sampling {sampling!r}; choices: {', '.join(SAMPLINGS)}")
    if different_weight < 0:
        raise LabkitError(f"different_weight must be >= 0, got {different_weight}")
    if min_pair_loss < 0:
        raise LabkitError(f"min_pair_loss must be >= 0, got {min_pair_loss}")
    valid = _check_targets(f, instances, valid)
    on = (instances > 0) & valid
    per_image: list[Tensor] = []
    if sampling == "random":
        if int(num_pairs) < 1:
            raise LabkitError(f"num_pairs must be >= 1, got {num_pairs}")
        for b in range(f.shape[0]):
            idx = on[b].reshape(-1).nonzero(as_tuple=True)[0]
            if len(idx) < 2:
                per_image.append(f[b].sum() * 0.0)
                continue
            draw = torch.randint(len(idx), (2, int(num_pairs)), generator=generator).to(idx.device)
            draw = draw[:, draw[0] != draw[1]]
            if draw.shape[1] == 0:
                per_image.append(f[b].sum() * 0.0)
                continue
            a, c = idx[draw[0]], idx[draw[1]]
            fb, ib = f[b].reshape(-1), instances[b].reshape(-1)
            terms = _pair_terms(fb[a], fb[c], ib[a], ib[c], m2, theta, different_weight)
            if min_pair_loss > 0:
                terms = terms[terms.detach() > min_pair_loss]
            per_image.append(terms.mean() if terms.numel() else f[b].sum() * 0.0)
        return _batch_mean(per_image, f)
    offsets = stratified_offsets(window, center, dilation, half=True).tolist()
    height, width = f.shape[-2:]
    total = f.new_zeros(f.shape[0])
    count = f.new_zeros(f.shape[0])
    for dy, dx in offsets:
        if abs(dy) >= height or abs(dx) >= width:
            continue
        ya, yb = (slice(0, height - dy), slice(dy, height)) if dy >= 0 else (slice(-dy, height), slice(0, height + dy))
        xa, xb = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
        both = on[:, ya, xa] & on[:, yb, xb]
        if not bool(both.any()):
            continue
        terms = _pair_terms(f[:, ya, xa], f[:, yb, xb], instances[:, ya, xa], instances[:, yb, xb], m2, theta,
                            different_weight)
        if min_pair_loss > 0:
            both = both & (terms.detach() > min_pair_loss)
        total = total + (terms * both).flatten(1).sum(1)
        count = count + both.flatten(1).sum(1)
    for b in range(f.shape[0]):
        per_image.append(total[b] / count[b] if bool(count[b] > 0) else f[b].sum() * 0.0)
    return _batch_mean(per_image, f)


def mumford_shah_loss(f: Tensor) -> Tensor:
    """Eq. (7): mean of ``log((f(x,y) - f(x,y+1))^2 + (f(x,y) - f(x+1,y))^2 + 1)`` (forward differences).

    Evaluated on the pixels that have both a right and a lower neighbour;
    0 for an image narrower or shorter than 2 pixels.
    """
    f = _squeeze(f)
    if f.shape[0] == 0 or f.shape[-1] < 2 or f.shape[-2] < 2:
        return f.sum() * 0.0
    core = f[:, :-1, :-1]
    grad2 = (core - f[:, :-1, 1:]) ** 2 + (core - f[:, 1:, :-1]) ** 2
    return torch.log1p(grad2).flatten(1).mean(1).mean()


def quantization_loss(f: Tensor) -> Tensor:
    """``|f - Round(f)|`` averaged over the pixels; Round is detached (gradient through the first ``f`` only)."""
    f = _squeeze(f)
    if f.numel() == 0:
        return f.sum() * 0.0
    return (f - torch.round(f).detach()).abs().flatten(1).mean(1).mean()


def dvis_loss(
    f: Tensor,
    instances: Tensor,
    valid: Tensor | None = None,
    *,
    m1: float = 2.0,
    m2: float = 1.0,
    theta: float = 0.1,
    binary_weight: float = 1.0,
    pairwise_weight: float = 1.0,
    mumford_shah_weight: float = 0.1,
    quantization_weight: float = 0.1,
    sampling: str = "stratified",
    window: int = 129,
    center: int = 8,
    dilation: int = 8,
    num_pairs: int = 4096,
    different_weight: float = 1.0,
    min_pair_loss: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Every term of Eq. (2) by name (``binary``, ``pairwise``, ``mumford_shah``, ``quantization``) and ``loss``.

    ``f`` is the network's raw output, before the ReLU of Sec. 4: Eq. (3) and
    (4) apply the ReLU themselves, and the two regularisers are evaluated on
    the label map ``ReLU(f)``.

    ``loss`` is the weighted sum; a term with weight 0 is not computed (0).
    The weights are not in the paper; see :class:`labkit.methods.dvis.DVISParams`
    for the defaults and where they come from.
    """
    f = _squeeze(f)
    _check_margin("m1", m1)
    _check_margin("m2", m2)
    for name, w in (("binary_weight", binary_weight), ("pairwise_weight", pairwise_weight),
                    ("mumford_shah_weight", mumford_shah_weight), ("quantization_weight", quantization_weight)):
        if w < 0:
            raise LabkitError(f"{name} must be >= 0, got {w}")
    zero = f.sum() * 0.0
    terms = {
        "binary": binary_loss(f, instances, valid, m1=m1, theta=theta) if binary_weight else zero,
        "pairwise": pairwise_loss(
            f, instances, valid, m2=m2, theta=theta, sampling=sampling, window=window, center=center,
            dilation=dilation, num_pairs=num_pairs, different_weight=different_weight, min_pair_loss=min_pair_loss,
            generator=generator,
        ) if pairwise_weight else zero,
        "mumford_shah": mumford_shah_loss(torch.relu(f)) if mumford_shah_weight else zero,
        "quantization": quantization_loss(torch.relu(f)) if quantization_weight else zero,
    }
    terms["loss"] = (binary_weight * terms["binary"] + pairwise_weight * terms["pairwise"]
                     + mumford_shah_weight * terms["mumford_shah"] + quantization_weight * terms["quantization"])
    return terms


class DVISLoss(nn.Module):
    """Thin module around :func:`dvis_loss`; ``forward(f, instances, valid=None)`` returns the dict of terms."""

    def __init__(self, **kwargs: float | int | str) -> None:
        super().__init__()
        self.kwargs = kwargs

    def forward(self, f: Tensor, instances: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
        return dvis_loss(f, instances, valid, **self.kwargs)
