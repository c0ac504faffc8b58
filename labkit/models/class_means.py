"""Nearest-class-mean readout on a unit-sphere embedding (HLE, Kerola et al. 2021, Eq. 9-10).

Each semantic class ``k`` has a persistent mean ``mu_k`` (a free vector,
normalised to the unit sphere where it is used) and a learned spread
``sigma_k = exp(log_sigma_k)``.  The semantic score of an embedding ``e`` is the
softmax over classes of the Gaussian kernel of its cosine distance (Eq. 7, 9):

    ``psi_k(e) = p_k(e) / sum_c p_c(e)``,   ``p_k(e) = exp(-(1 - e.mu_k) / (2 sigma_k^2))``,

so the readout's output ``logits_k = -(1 - e.mu_k) / (2 sigma_k^2)`` is a map of
logits whose softmax is ``psi``.  The means and spreads are parameters of the
model, so checkpoints keep them, and the readout is rebuilt from the model
config (``readout={"kind": "class_means", ...}`` of
:func:`labkit.models.build_model`).

Beside the logits, the forward pass returns the raw means and the spreads as
constant maps (``[B, K*D, H, W]`` and ``[B, K, H, W]``, expanded views that
take no memory), so a loss can reach them through the model outputs, which
stay a dict of full-resolution maps.  The buffer ``pixel_counts [K, 2]``
holds, per class, the labelled training pixels and those inside instances; in
training mode it is also returned as ``class_pixel_counts`` for the loss to
add to, and ``thing_classes`` (a constant ``[B, K, H, W]`` map of 0/1) marks
the classes seen mostly inside instances, so a decoder knows the things of a
checkpoint without being told.

Initialisation (``init``): ``"thomson"`` spreads the means evenly over the
sphere (Eq. 17, :func:`labkit.clustering.thomson_points`), ``"random"``
draws them from a Gaussian (the ablation of the paper's Table 6).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.errors import LabkitError

INITS = ("thomson", "random")


class ClassMeans(nn.Module):
    """``forward(outputs) -> {name: logits [B,K,H,W], "class_means": ..., "class_sigma": ...}``.

    Reads ``outputs[head][:, start:stop]`` (the whole head by default),
    normalised to unit length over the channels, so a slice of a larger
    embedding (a split embedding space) works as well.
    """

    def __init__(
        self,
        head: str,
        classes: int,
        dim: int,
        start: int = 0,
        init: str = "thomson",
        sigma: float = 0.5,
        name: str = "semantic",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if int(classes) < 1 or int(dim) < 1 or int(start) < 0:
            raise LabkitError(f"class means: need classes >= 1, dim >= 1, start >= 0; got {classes}, {dim}, {start}")
        if init not in INITS:
            raise LabkitError(f"class means: unknown init {init!r}; choices: {INITS}")
        if not sigma > 0:
            raise LabkitError(f"class means: sigma must be > 0, got {sigma}")
        self.head, self.name, self.start, self.dim = head, name, int(start), int(dim)
        if init == "thomson" and not (self.dim == 1 and int(classes) > 2):
            from labkit.clustering.thomson import thomson_points

            means, _ = thomson_points(int(classes), self.dim, seed=int(seed))
        else:
            gen = torch.Generator().manual_seed(int(seed))
            means = F.normalize(torch.randn(int(classes), self.dim, generator=gen, dtype=torch.float64), dim=1)
        self.means = nn.Parameter(means.float())
        self.log_sigma = nn.Parameter(torch.full((int(classes),), math.log(float(sigma))))
        # per class: labelled training pixels, and those inside instances (a loss adds to it in training)
        self.register_buffer("pixel_counts", torch.zeros(int(classes), 2, dtype=torch.int64))
        self.config = {
            "kind": "class_means", "head": head, "classes": int(classes), "dim": self.dim, "start": self.start,
            "init": init, "sigma": float(sigma), "name": name, "seed": int(seed),
        }

    def forward(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        features = outputs[self.head]
        if features.shape[1] < self.start + self.dim:
            raise LabkitError(
                f"class means read channels {self.start}..{self.start + self.dim - 1} of head {self.head!r}, "
                f"which has {features.shape[1]}"
            )
        e = F.normalize(features[:, self.start : self.start + self.dim], dim=1)
        mu = F.normalize(self.means, dim=1)
        sigma = self.log_sigma.exp()
        cos = torch.einsum("bdhw,kd->bkhw", e, mu)
        logits = (cos - 1.0) / (2.0 * sigma[None, :, None, None] ** 2)
        b, _, h, w = features.shape
        k = self.means.shape[0]
        total, inside = self.pixel_counts[:, 0], self.pixel_counts[:, 1]
        things = ((inside * 2 > total) & (total > 0)).to(logits.dtype)
        outputs = {
            self.name: logits,
            "class_means": self.means.reshape(1, k * self.dim, 1, 1).expand(b, k * self.dim, h, w),
            "class_sigma": sigma.reshape(1, k, 1, 1).expand(b, k, h, w),
            "thing_classes": things.reshape(1, k, 1, 1).expand(b, k, h, w),
        }
        if self.training:  # the counts themselves, for the loss to add to (not a map)
            outputs["class_pixel_counts"] = self.pixel_counts
        return outputs


READOUTS = {"class_means": ClassMeans}


def build_readout(config: dict[str, Any]) -> nn.Module:
    """The readout module described by ``config`` (``{"kind": ..., **arguments}``)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in READOUTS:
        raise LabkitError(f"unknown readout kind {kind!r}; choices: {sorted(READOUTS)}")
    try:
        return READOUTS[kind](**config)
    except TypeError as exc:
        raise LabkitError(f"bad arguments for readout {kind!r}: {exc}") from None


__all__ = ["ClassMeans", "READOUTS", "build_readout"]
