"""IRNet stages 1 and 2: class attention maps (Eq. 1) and inter-pixel relation mining (Sec. 4.2).

CAMs: the classification network ends in global average pooling and a 1x1
classifier, so the map of class ``c`` is the classifier applied at every
pixel, ``phi_c^T f(x)``; Eq. 1 divides it by its maximum over the image.
As in the authors' code the map is clipped at zero first (ReLU), maps of
classes absent from the image labels are zero, and :func:`multiscale_cams`
sums the ReLU'd maps of several scales and their horizontal flips (the
authors' scales 1.0, 0.5, 1.5, 2.0) before normalising.  labkit's heads are
1x1 convolutions with a bias, so the map here is ``phi_c^T f(x) + b_c``
(the authors' classifier has no bias); the pooled logit is the same pooled
map either way.

Mining: a pixel is confident foreground of class ``c`` when its largest CAM
(class ``c``) exceeds ``fg_threshold`` (0.30), confident background when every
CAM is below ``bg_threshold`` (0.05), and ignored (255) in between (the
authors' code, :func:`mine_relations`).  The authors refine both
thresholded maps with a dense CRF on the image before combining them
(:func:`mine_relations_crf`, their ``cam_to_ir_label``); ``pydensecrf`` no
longer builds on current Python and no maintained wheel replaces it
(``pydensecrf2`` 1.1 is a source distribution needing a C++/Cython build), so
the CRF is labkit's own, in PyTorch (:mod:`labkit.clustering.dense_crf`).
Without it, CAMs read at a coarse stride give confident areas far larger
than the objects, and every later stage learns from them.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit.errors import LabkitError

IGNORE = 255


def normalize_cams(raw: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 on raw maps ``[B, K, H, W]``: ReLU, zero where ``labels [B, K]`` is 0, divide by each map's max.

    A map whose maximum is 0 stays 0.
    """
    if raw.ndim != 4:
        raise LabkitError(f"raw CAMs must be [B,K,H,W], got shape {tuple(raw.shape)}")
    if not torch.isfinite(raw).all():
        raise LabkitError("raw CAMs contain NaN or infinite values")
    cams = raw.clamp(min=0)
    if labels is not None:
        if labels.shape != raw.shape[:2]:
            raise LabkitError(f"labels {tuple(labels.shape)} do not match CAMs {tuple(raw.shape)} ([B,K])")
        cams = cams * (labels > 0).to(cams)[:, :, None, None]
    peak = cams.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, cams / peak.clamp(min=1e-12), torch.zeros_like(cams))


def cam_from_features(features: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 from a feature map ``f [B, F, H, W]`` and classifier weights ``phi [K, F]``."""
    if features.ndim != 4 or weights.ndim != 2 or weights.shape[1] != features.shape[1]:
        raise LabkitError(f"features [B,F,H,W] and weights [K,F] needed, got {tuple(features.shape)}, {tuple(weights.shape)}")
    return normalize_cams(torch.einsum("kf,bfhw->bkhw", weights, features), labels)


@torch.no_grad()
def multiscale_cams(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0), flip: bool = True, head: str = "cam",
) -> torch.Tensor:
    """Normalised CAMs ``[B, K, H, W]`` of ``images [B, C, H, W]`` for foreground ``labels [B, K]``.

    Sum over ``scales`` (and flips) of the ReLU'd maps resized to ``H x W``, then Eq. 1.
    """
    if not scales or any(s <= 0 for s in scales):
        raise LabkitError(f"CAM scales must be positive, got {tuple(scales)}")
    height, width = images.shape[-2:]
    total = None
    for scale in scales:
        size = (max(int(round(height * scale)), 8), max(int(round(width * scale)), 8))
        x = images if size == (height, width) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        views = [(x, False)] + ([(torch.flip(x, (-1,)), True)] if flip else [])
        for view, flipped in views:
            cam = head_output(model, view, head).float().clamp(min=0)
            if flipped:
                cam = torch.flip(cam, (-1,))
            if cam.shape[-2:] != (height, width):
                cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)
            total = cam if total is None else total + cam
    return normalize_cams(total, labels.to(total))


def head_output(model: nn.Module, image: torch.Tensor, head: str) -> torch.Tensor:
    """One head's map; for a labkit model whose head has a backbone of its own, without running the others."""
    own = getattr(model, "own_backbones", None)
    if own is not None and head in own and hasattr(model, "heads"):
        return model.heads[head](own[head](image))
    return model(image)[head]


def _check_thresholds(fg_threshold: float, bg_threshold: float) -> None:
    if not 0 <= bg_threshold <= fg_threshold <= 1:
        raise LabkitError(f"need 0 <= bg_threshold <= fg_threshold <= 1, got {bg_threshold}, {fg_threshold}")


def mine_relations(cams: torch.Tensor, fg_threshold: float = 0.30, bg_threshold: float = 0.05) -> torch.Tensor:
    """Pseudo class map ``[B, H, W]`` int64 from normalised CAMs ``[B, K, H, W]`` of the classes 1..K.

    ``c`` (1..K) where the largest CAM, of class ``c``, exceeds ``fg_threshold``;
    0 where every CAM is below ``bg_threshold``; 255 (ignored) elsewhere.
    """
    _check_thresholds(fg_threshold, bg_threshold)
    if cams.ndim != 4:
        raise LabkitError(f"CAMs must be [B,K,H,W], got shape {tuple(cams.shape)}")
    batch, _, height, width = cams.shape
    if cams.shape[1] == 0:
        return torch.zeros(batch, height, width, dtype=torch.int64, device=cams.device)
    best, cls = cams.max(dim=1)
    out = torch.full((batch, height, width), IGNORE, dtype=torch.int64, device=cams.device)
    out[best < bg_threshold] = 0
    fg = best > fg_threshold
    out[fg] = cls[fg] + 1
    return out


def mine_relations_crf(image: torch.Tensor, cams: torch.Tensor, fg_threshold: float = 0.30,
                       bg_threshold: float = 0.05, **crf: float) -> torch.Tensor:
    """:func:`mine_relations` of one image with the authors' dense-CRF refinement: ``[H, W]`` int64.

    ``image [C, H, W]`` (0..1), ``cams [K, H, W]`` normalised.  As the
    authors' ``cam_to_ir_label``: the labelling "class of the largest CAM,
    background below the threshold" is made at ``fg_threshold`` and at
    ``bg_threshold`` over the classes present (non-zero CAM), each is refined
    by :func:`~labkit.clustering.dense_crf.crf_inference_label`; a pixel is
    its class where the first says a class, background where both say
    background, ignored (255) otherwise.  ``crf`` passes CRF settings.
    """
    from labkit.clustering.dense_crf import dense_crf, unary_from_labels

    if cams.ndim != 3 or image.ndim != 3 or cams.shape[-2:] != image.shape[-2:]:
        raise LabkitError(f"need image [C,H,W] and CAMs [K,H,W] of one size, got {tuple(image.shape)}, {tuple(cams.shape)}")
    _check_thresholds(fg_threshold, bg_threshold)
    present = [k for k in range(cams.shape[0]) if float(cams[k].max()) > 0]
    if not present:
        return torch.zeros(cams.shape[-2:], dtype=torch.int64, device=cams.device)
    keys = torch.tensor([0, *[k + 1 for k in present]], device=cams.device)
    cams = cams[present]
    labellings = [torch.cat([torch.full_like(cams[:1], t), cams]).argmax(dim=0) for t in (fg_threshold, bg_threshold)]
    unary = torch.stack([unary_from_labels(lab, len(keys)) for lab in labellings])
    fg, bg = keys[dense_crf(image, unary, **crf).argmax(dim=1)]
    out = torch.where(fg > 0, fg, torch.full_like(fg, IGNORE))
    return out.masked_fill_((fg == 0) & (bg == 0), 0)
