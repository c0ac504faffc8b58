"""Hierarchical Lovász Embedding loss (Kerola et al., CVPR 2021, Sec. 3.4, Eq. 7-16).

Per pixel ``i`` the network predicts a unit embedding ``e_i``, an instance
spread ``sigma_i``, a spatial spread ``sigma_i^sp`` (pixels) and a seed
``s_i`` in ``(0, 1)``; per semantic class ``k`` the model holds a persistent
mean ``mu_k`` and a spread ``sigma_k`` (:class:`labkit.models.class_means.ClassMeans`,
whose softmax logits ``psi`` of Eq. 9 arrive here ready-made).

For each ground-truth instance ``l`` of an image (pixels ``I_l``):

* Eq. 10: ``mu_l`` = mean of ``e_j`` over ``I_l``, renormalised to the sphere
  (our reading: the cosine distance of Eq. 7 is a distance between unit
  vectors); ``sigma_l``, ``sigma_l^sp`` = means of the predicted spreads over
  ``I_l`` (as SpatialEmbeddings, the closest public relative); ``rho_l`` =
  the centroid of ``I_l`` (the paper leaves ``rho_l`` undefined).
* Eq. 7-8: ``phi_l(e_i) = exp(-(1 - e_i.mu_l) / (2 sigma_l^2) - |rho_i - rho_l|^2 / (2 (sigma_l^sp)^2))``
  for every labelled pixel ``i`` of the image.
* Eq. 11: ``L_ins`` = ``LovászBinary(phi_l, [i in I_l])`` (Eq. 3-5,
  :func:`labkit.losses.lovasz.lovasz_binary`), averaged over the instances
  of the batch.  ``instance_loss="cross_entropy"`` replaces it by the binary
  cross-entropy of ``phi_l`` (the ablation of Table 6).
* Eq. 13: ``L_seed`` = mean over labelled pixels of ``(s_i - sg[phi_l(e_i)])^2``
  on instance pixels and ``s_i^2`` elsewhere (stuff, and background when the
  data has one).
* Eq. 14: ``L_ins-var = gamma (sigma_i - sg[mean sigma over I_l])^2``,
  ``gamma = 10``, averaged over instance pixels.  We apply it to the
  spatial spread too, measured in units of ``spatial_scale`` so both are of
  order one (the paper names only the instance spread).

For the semantic hierarchy:

* Eq. 12: ``L_seg = LovászSoftmax(psi, t_seg)`` (Eq. 6) over the labelled
  pixels of the batch; ``semantic_loss="cross_entropy"`` uses the softmax
  cross-entropy of the same logits instead.
* Eq. 15: ``L_seg-mean`` = mean over the classes ``k`` present in the batch of
  ``|mu_hat_k - sg[mu_k^batch]|^2`` with ``mu_k^batch`` the (renormalised)
  mean embedding of the class's pixels, the VQ-VAE codebook update that lets
  the persistent means follow the network.  The means also receive the
  gradient of ``L_seg`` (Eq. 9 uses them); ``class_mean_weight=0`` drops the
  VQ term (Table 6, "VQ-VAE style").

Total (Eq. 16): ``L = L_seg + L_seg-mean + L_ins + L_ins-var + L_seed``; each
term is a mean, so the sum is "averaged over all pixels" as the paper says.
Pixels whose semantic label is ``ignore_index`` (255) take no part in any term.
Ids carry no meaning: permuting them changes nothing.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.errors import LabkitError
from labkit.losses.lovasz import lovasz_binary_rows, lovasz_softmax

IGNORE_INDEX = 255
CHOICES = ("lovasz", "cross_entropy")


def pixel_grid(height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """``[2, H*W]`` pixel coordinates ``(row, column)`` in pixels."""
    yy, xx = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([yy.reshape(-1), xx.reshape(-1)])


def instance_kernel(
    embedding: Tensor, coords: Tensor, mean: Tensor, center: Tensor, sigma: Tensor, spatial_sigma: Tensor
) -> Tensor:
    """Eq. 7-8: ``phi(e_i) = exp(-(1 - e_i.mu)/(2 sigma^2) - |rho_i - rho|^2/(2 sigma_sp^2))`` for ``[D, N]`` embeddings.

    ``coords [2, N]``; one instance: ``mean [D]`` (unit), ``center [2]``, scalar
    spreads -> ``[N]``; ``L`` instances: ``mean [L, D]``, ``center [L, 2]``,
    spreads ``[L]`` -> ``[L, N]``.
    """
    d_cos = 1.0 - mean @ embedding
    d_sp = ((coords - center[..., :, None]) ** 2).sum(-2)
    return torch.exp(-d_cos / (2 * sigma[..., None] ** 2) - d_sp / (2 * spatial_sigma[..., None] ** 2))


def _check(embedding: Tensor, sigma: Tensor, seed: Tensor, logits: Tensor, instances: Tensor, semantic: Tensor) -> None:
    if embedding.ndim != 4:
        raise LabkitError(f"hle loss: embedding must be [B,D,H,W], got {tuple(embedding.shape)}")
    b, _, h, w = embedding.shape
    for name, t, c in (("sigma", sigma, 2), ("seed", seed, 1)):
        if tuple(t.shape) != (b, c, h, w):
            raise LabkitError(f"hle loss: {name} must be [B,{c},H,W] = {(b, c, h, w)}, got {tuple(t.shape)}")
    if logits.ndim != 4 or logits.shape[0] != b or tuple(logits.shape[2:]) != (h, w):
        raise LabkitError(f"hle loss: semantic logits must be [B,K,H,W] with B,H,W = {(b, h, w)}, got {tuple(logits.shape)}")
    for name, t in (("instances", instances), ("semantic", semantic)):
        if tuple(t.shape) != (b, h, w):
            raise LabkitError(f"hle loss: {name} must be [B,H,W] = {(b, h, w)}, got {tuple(t.shape)}")
        if t.is_floating_point():
            raise LabkitError(f"hle loss: {name} must be an integer map, got {t.dtype}")
    for name, t in (("embedding", embedding), ("sigma", sigma), ("seed", seed), ("semantic logits", logits)):
        if not torch.isfinite(t).all():
            raise LabkitError(f"hle loss: {name} contains NaN or infinite values")
    if bool((sigma <= 0).any()):
        raise LabkitError("hle loss: spreads (sigma) must be positive")


def hle_loss(
    embedding: Tensor,
    sigma: Tensor,
    seed: Tensor,
    semantic_logits: Tensor,
    class_means: Tensor,
    instances: Tensor,
    semantic: Tensor,
    *,
    semantic_embedding: Tensor | None = None,
    gamma: float = 10.0,
    spatial_scale: float = 16.0,
    instance_loss: Literal["lovasz", "cross_entropy"] = "lovasz",
    semantic_loss: Literal["lovasz", "cross_entropy"] = "lovasz",
    lovasz_classes: Literal["all", "present"] = "all",
    class_mean_weight: float = 1.0,
    seed_weight: float = 1.0,
    instance_terms: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Tensor]:
    """Every term of Eq. 16 by name (``seg, seg_mean, ins, ins_var, seed``) and their sum under ``loss``.

    Args:
        embedding: ``[B, D, H, W]`` unit instance embeddings ``e_i``.
        sigma: ``[B, 2, H, W]`` positive spreads: instance ``sigma_i`` (cosine
            units) and spatial ``sigma_i^sp`` (pixels).
        seed: ``[B, 1, H, W]`` seed scores in ``[0, 1]``.
        semantic_logits: ``[B, K, H, W]`` logits of ``psi`` (Eq. 9).
        class_means: ``[K, D_s]`` persistent class means ``mu_hat_k`` (raw parameters).
        instances, semantic: ``[B, H, W]`` integer maps (0 = no instance; ``ignore_index`` pixels skipped).
        semantic_embedding: ``[B, D_s, H, W]`` the embedding the class means
            live in; default ``embedding`` (the hierarchical space).
        gamma: weight of Eq. 14 (paper: 10).
        spatial_scale: pixels per unit of spatial spread in Eq. 14.
        instance_loss, semantic_loss: ``"lovasz"`` (the paper) or ``"cross_entropy"``.
        lovasz_classes: classes averaged in Eq. 6 (see :func:`lovasz_softmax`).
        class_mean_weight: weight of Eq. 15 (1; 0 drops it).
        seed_weight: weight of Eq. 13's instance pixels (the paper: 1; other pixels
            keep 1), SpatialEmbeddings' ``foreground_weight`` (its code: 10).
        instance_terms: ``False`` leaves out Eq. 11, 13 and 14 (they are 0 and
            not computed): the semantic part alone, as ``hle``'s semantic warm-up trains.
    """
    _check(embedding, sigma, seed, semantic_logits, instances, semantic)
    for name, choice in (("instance_loss", instance_loss), ("semantic_loss", semantic_loss)):
        if choice not in CHOICES:
            raise LabkitError(f"hle loss: {name} must be one of {CHOICES}, got {choice!r}")
    if not gamma >= 0 or not spatial_scale > 0 or not class_mean_weight >= 0 or not seed_weight >= 0:
        raise LabkitError(
            "hle loss: need gamma >= 0, spatial_scale > 0, class_mean_weight >= 0, seed_weight >= 0; "
            f"got {gamma}, {spatial_scale}, {class_mean_weight}, {seed_weight}"
        )
    sem_emb = embedding if semantic_embedding is None else semantic_embedding
    num_classes = semantic_logits.shape[1]
    if class_means.ndim != 2 or class_means.shape != (num_classes, sem_emb.shape[1]):
        raise LabkitError(
            f"hle loss: class means must be [K, D] = {(num_classes, sem_emb.shape[1])}, got {tuple(class_means.shape)}"
        )
    valid_sem = semantic[semantic != ignore_index]
    if valid_sem.numel() and (valid_sem.min() < 0 or valid_sem.max() >= num_classes):
        raise LabkitError(f"hle loss: semantic classes must lie in 0..{num_classes - 1} (or {ignore_index})")
    b, _, h, w = embedding.shape
    coords = pixel_grid(h, w, embedding.device, embedding.dtype)
    zero = embedding.sum() * 0.0
    ins_terms: list[Tensor] = []
    var_sum, var_count = zero, 0
    seed_sum, seed_count = zero, 0
    for i in range(b if instance_terms else 0):
        valid = (semantic[i] != ignore_index).reshape(-1)
        if not valid.any():
            continue
        ids_map = instances[i].reshape(-1)
        e = embedding[i].reshape(embedding.shape[1], -1)[:, valid]
        sig = sigma[i].reshape(2, -1)[:, valid]
        xy = coords[:, valid]
        ids = ids_map[valid]
        inside = ids > 0
        pixel = inside.nonzero(as_tuple=True)[0]
        labels, row = torch.unique(ids[inside], return_inverse=True)  # row: each instance pixel's instance
        member = torch.zeros(len(labels), len(ids), dtype=torch.bool, device=ids.device)
        member[row, pixel] = True  # [L, N]
        target = torch.zeros_like(sig[0])
        if len(member):  # Eq. 7-8 and 10 for every instance of the image at once: phi [L, N]
            weights = member.to(e.dtype) / member.sum(1, keepdim=True)
            mu = F.normalize(weights @ e.t(), dim=1)
            s_l, s_sp = (weights @ sig.t()).unbind(1)
            phi = instance_kernel(e, xy, mu, weights @ xy.t(), s_l, s_sp)
            if instance_loss == "lovasz":
                ins_terms.append(lovasz_binary_rows(phi, member))
            else:
                ins_terms.append(
                    F.binary_cross_entropy(phi.clamp(1e-6, 1 - 1e-6), member.to(phi.dtype), reduction="none").mean(1)
                )
            target[pixel] = phi.detach()[row, pixel]
            var_sum = var_sum + ((sig[0, pixel] - s_l.detach()[row]) ** 2).sum()
            var_sum = var_sum + (((sig[1, pixel] - s_sp.detach()[row]) / spatial_scale) ** 2).sum()
            var_count += len(pixel)
        s = seed[i, 0].reshape(-1)[valid]
        weight = torch.where(ids > 0, seed_weight, 1.0).to(s.dtype)
        seed_sum = seed_sum + (weight * (s - target) ** 2).sum()
        seed_count += len(s)
    ins = torch.cat(ins_terms).mean() if ins_terms else zero
    ins_var = gamma * var_sum / max(var_count, 1)
    seed_term = seed_sum / max(seed_count, 1)
    if semantic_loss == "lovasz":
        seg = lovasz_softmax(semantic_logits.softmax(dim=1), semantic, lovasz_classes, ignore_index)
    elif bool((semantic != ignore_index).any()):
        seg = F.cross_entropy(semantic_logits, semantic.long(), ignore_index=ignore_index)
    else:
        seg = semantic_logits.sum() * 0.0
    seg_mean = _class_mean_term(sem_emb, class_means, semantic, ignore_index) * class_mean_weight
    terms = {"seg": seg, "seg_mean": seg_mean, "ins": ins, "ins_var": ins_var, "seed": seed_term}
    terms["loss"] = seg + seg_mean + ins + ins_var + seed_term
    return terms


def _class_mean_term(embedding: Tensor, class_means: Tensor, semantic: Tensor, ignore_index: int) -> Tensor:
    """Eq. 15: mean over the classes present of ``|mu_hat_k - sg[mu_k^batch]|^2``."""
    d = embedding.shape[1]
    labels = semantic.reshape(-1)
    keep = labels != ignore_index
    if not keep.any():
        return class_means.sum() * 0.0
    points = embedding.detach().permute(0, 2, 3, 1).reshape(-1, d)[keep]
    labels = labels[keep].long()
    k = class_means.shape[0]
    sums = points.new_zeros(k, d).index_add_(0, labels, points)
    counts = torch.bincount(labels, minlength=k)
    present = counts > 0
    batch_means = F.normalize(sums[present], dim=1)
    return ((class_means[present] - batch_means) ** 2).sum(dim=1).mean()


class HLELoss(nn.Module):
    """Module form of :func:`hle_loss` with its keyword options fixed at construction."""

    def __init__(self, **options) -> None:
        super().__init__()
        self.options = options

    def forward(
        self, embedding: Tensor, sigma: Tensor, seed: Tensor, semantic_logits: Tensor, class_means: Tensor,
        instances: Tensor, semantic: Tensor, semantic_embedding: Tensor | None = None,
    ) -> dict[str, Tensor]:
        return hle_loss(
            embedding, sigma, seed, semantic_logits, class_means, instances, semantic,
            semantic_embedding=semantic_embedding, **self.options,
        )


__all__ = ["HLELoss", "hle_loss", "instance_kernel", "pixel_grid"]
