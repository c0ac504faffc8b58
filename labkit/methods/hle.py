"""``hle``: Hierarchical Lovász Embeddings (Kerola et al., CVPR 2021), labkit's panoptic method.

One network predicts, per pixel, a unit-sphere embedding ``e_i`` (head
``embedding``, ``embedding_dim`` channels; the paper: 12 on Cityscapes, 128 on
COCO), two spreads (head ``sigma``: the instance spread ``sigma_i`` and the
spatial spread ``sigma_i^sp``) and a seed score (head ``seed``, a logit).
The model also holds one persistent mean and one learned spread per
semantic class (:class:`labkit.models.class_means.ClassMeans`, part of the
model state, so checkpoints keep them) and outputs the nearest-class-mean
logits of Eq. 9 under ``semantic``.  The class means start as a solution of
the Thomson problem (Eq. 17, :func:`labkit.clustering.thomson_points`) or,
with ``init="random"``, at random.

Training minimises Eq. 16 (:func:`labkit.losses.hle.hle_loss`): the instance
Lovász hinge on the kernel of Eq. 7-8 (Eq. 11), the Lovász-softmax on the
class scores (Eq. 12), the seed regression to the detached kernel (Eq. 13),
the spread consistency with ``gamma = 10`` (Eq. 14) and the VQ-VAE-style
class-mean term (Eq. 15).  Ablations of the paper's Table 6 are parameters:
``instance_loss`` / ``semantic_loss`` (``"lovasz"`` or ``"cross_entropy"``),
``space`` (``"hierarchical"``: the class means live in the instance
embedding; ``"split"``: a second unit embedding of ``embedding_dim``
channels holds them, the paper's "split embedding space" with separate
instance and semantic spheres), ``init`` and ``class_mean_weight``.

Semantic warm-up (``semantic_warmup``, ours, off by default): the first
``semantic_warmup`` fraction of the training epochs trains Eq. 12 and 15
alone, then Eq. 16 whole.  The paper trains everything at once from
ImageNet-pretrained backbones, whose features already tell the classes
apart; from scratch, the instance hinge (Eq. 11) swamps the semantic term in
the shared network and the thing classes never form, while classes learnt
first survive the joint training (benchmarks/RESULTS.md, "what keeps the
classes from forming").  Validation always reports the whole loss.

Seed weight (``seed_weight``, the paper: 1): Eq. 13's instance pixels
count ``seed_weight`` times, as the foreground weight of the seed loss in
SpatialEmbeddings' code (Neven et al. 2019, whose seed map the paper takes
over; their code uses 10).  With weight 1 the seed map learnt from a few
crops of touching nuclei stays flat over each nucleus (Eq. 13's target
peaks at its centre only by a spatial Gaussian, a small share of a loss
that the background and the Lovász terms dominate), so the 3x3 max-pool
keeps several seeds per nucleus that do not merge, and nuclei come out cut
in two.  Training on an image folder (``folder_params``, as ``labkit train
--data DIR`` does) sets 10 and trains 60 epochs instead of 30 (on the
nuclei folder, over three seeds, 45 epochs lifted the mean from 0.79 to
0.85 and 60 to 0.87, every seed above ``watershed``);
synthetic families keep the paper's 1 and 30 epochs, with which the
panoptic figures were measured (benchmarks/RESULTS.md).

Panoptic decoding (Sec. 3.5, :func:`panoptic_decode`): each pixel's class is
the argmax of ``psi``; seeds are the thing pixels whose seed score (blurred
by ``seed_sigma``, below) survives 3x3 max-pool suppression and exceeds
``seed_threshold``; taken by decreasing
score, a seed whose kernel ``Phi`` (Eq. 8 with the seed's own embedding,
position and spreads) to an already kept seed exceeds ``kernel_threshold`` is
merged into it; each remaining thing pixel joins the kept seed with the
highest ``Phi`` when that exceeds ``kernel_threshold``; an instance takes its
seed pixel's class; stuff pixels whose class probability is below
``stuff_threshold`` become unlabelled (0).  The prediction carries the
``semantic`` map, so PQ (things and stuff), AP and the instance metrics apply.

Seed-map blur (``seed_sigma``, ours; 0 = the paper): the seed map is blurred
by a Gaussian of ``seed_sigma`` pixels before the max-pool
(:func:`smooth_seed_map`).  Eq. 13's target ``phi_l`` is close to 1 over the
whole of an object whose spatial spread exceeds its radius, so the learnt
seed map is a plateau there, and its 3x3 local maxima lie where noise puts
them, often one near each end of a nucleus.  Decoding takes a seed's own
position for ``rho`` (training took the instance's centroid), so the kernel
of a seed near one end covers only part of the object and does not reach
the other seed: both are kept and the object is cut in two.  A plateau's
blur peaks at its centre.  Training on an image folder sets 3 pixels (for
nuclei of radius 6-13 px), and ``labkit tune`` sweeps 0, 2, 3 and 5
(benchmarks/RESULTS.md, own images, session 18).

Choices where the paper is silent:

* Spreads: ``sigma_i = sigma_init * exp(r_0)``, ``sigma_i^sp = spatial_sigma * exp(r_1)``
  (``r`` the raw head, clamped to ``[-6, 6]``); seed ``s_i = sigmoid(r_seed)``.
* ``instance_class="mean"`` (ours; default ``"seed"``, the paper) names an
  instance by the thing class of highest mean log-probability over its
  pixels instead of its seed pixel's class.
* Instance pixels are only the thing-class pixels (a thing kernel never
  claims a stuff pixel); an instance's score is its seed score (blurred,
  with ``seed_sigma``) times the mean probability of its class over its pixels.
* Which classes are things: ``things`` (decode parameter or method
  parameter); when neither is given, the classes learnt as things during
  training (more than half of their labelled pixels inside instances,
  counted by :meth:`HLE.loss` into a buffer of the model, hence kept in the
  checkpoint; :func:`count_thing_pixels`); failing that, every class but 0.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from labkit.data.contract import IGNORE_INDEX
from labkit.errors import LabkitError
from labkit.losses.hle import hle_loss, pixel_grid
from labkit.methods import register
from labkit.methods.base import Batch, Method, Outputs, Prediction
from labkit.methods.embedding import semantic_target, unet_defaults

SPACES = ("hierarchical", "split")
RAW_CLAMP = 6.0


@dataclasses.dataclass
class HLEParams:
    """Defaults: the paper's where it gives them (gamma, Lovász losses, Thomson init), ours otherwise."""

    embedding_dim: int = 8  # the paper: 12 (Cityscapes), 128 (COCO); 3 for pictures on the sphere
    space: str = "hierarchical"  # "hierarchical" (the paper) | "split" (Table 6 ablation)
    init: str = "thomson"  # class-mean initialisation: "thomson" (Eq. 17) | "random"
    instance_loss: str = "lovasz"  # Eq. 11: "lovasz" | "cross_entropy"
    semantic_loss: str = "lovasz"  # Eq. 12: "lovasz" | "cross_entropy"
    lovasz_classes: str = "all"  # Eq. 6 averages over all classes; "present" = Berman's default
    gamma: float = 10.0  # Eq. 14
    class_mean_weight: float = 1.0  # Eq. 15 (VQ-VAE style); 0 = off
    seed_weight: float = 1.0  # Eq. 13 on instance pixels (the paper: 1; SpatialEmbeddings' code: 10)
    semantic_warmup: float = 0.0  # fraction of the epochs that train Eq. 12 and 15 alone (ours; 0 = the paper)
    sigma_init: float = 0.5  # instance spread at raw output 0 (cosine-distance units)
    spatial_sigma: float = 16.0  # spatial spread at raw output 0, pixels; also Eq. 14's unit
    class_sigma_init: float = 0.5  # initial semantic spread sigma_k
    seed_threshold: float = 0.5  # decode: smallest seed score of a seed
    seed_sigma: float = 0.0  # decode: Gaussian blur of the seed map before the max-pool, pixels (ours; 0 = the paper)
    kernel_threshold: float = 0.5  # decode: Phi above which seeds merge and pixels join a seed
    stuff_threshold: float = 0.0  # decode: stuff pixels with a lower class probability become 0
    min_area: int = 8  # decode: smallest instance kept, pixels
    max_seeds: int = 256  # decode: candidate seeds per image (highest scores)
    instance_class: str = "seed"  # decode: "seed" (the paper: the seed pixel's class) | "mean" (mean log psi)
    things: tuple[int, ...] | None = None  # thing classes; None = those learnt from the training data
    width: int = 16  # UNet width
    depth: int = 3  # UNet downsamplings
    coords: bool = False  # pixel-coordinate input channels (UNet)
    epochs: int = 30
    lr: float = 2e-3


@register
class HLE(Method):
    """Hierarchical Lovász embeddings: embedding + spreads + seed + class means, panoptic decoding."""

    key = "hle"
    panoptic = True
    task = "instance"
    Params = HLEParams
    folder_params = {"seed_weight": 10.0, "epochs": 60, "seed_sigma": 3.0}

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        p = self.defaults
        if p.space not in SPACES:
            raise LabkitError(f"method 'hle': space must be one of {SPACES}, got {p.space!r}")
        for name in ("instance_loss", "semantic_loss"):
            if getattr(p, name) not in ("lovasz", "cross_entropy"):
                raise LabkitError(f"method 'hle': {name} must be 'lovasz' or 'cross_entropy', got {getattr(p, name)!r}")
        if p.init not in ("thomson", "random"):
            raise LabkitError(f"method 'hle': init must be 'thomson' or 'random', got {p.init!r}")
        if int(p.embedding_dim) < 2:
            raise LabkitError(f"method 'hle': embedding_dim must be >= 2, got {p.embedding_dim}")
        for name in ("sigma_init", "spatial_sigma", "class_sigma_init"):
            if not getattr(p, name) > 0:
                raise LabkitError(f"method 'hle': {name} must be > 0, got {getattr(p, name)}")
        if p.things is not None:
            p.things = tuple(int(c) for c in p.things)
        if not p.seed_weight >= 0:
            raise LabkitError(f"method 'hle': seed_weight must be >= 0, got {p.seed_weight}")
        if not 0 <= p.semantic_warmup < 1:
            raise LabkitError(f"method 'hle': semantic_warmup must be in [0, 1), got {p.semantic_warmup}")
        self.semantic_only = False  # set per epoch by begin_epoch during the warm-up

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """The semantic warm-up: epochs ``1 .. round(semantic_warmup * epochs)`` train Eq. 12 and 15 alone."""
        self.semantic_only = epoch <= round(float(self.defaults.semantic_warmup) * epochs)

    # -- model -----------------------------------------------------------
    def heads(self, num_classes: int) -> dict[str, int]:
        """``embedding`` (D, unit), ``sigma`` (2 raw spreads), ``seed`` (1 logit); ``semantic_embedding`` when split."""
        d = int(self.defaults.embedding_dim)
        heads = {"embedding": d, "sigma": 2, "seed": 1}
        if self.defaults.space == "split":
            heads["semantic_embedding"] = d
        return heads

    def normalized_heads(self) -> tuple[str, ...]:
        return ("embedding", "semantic_embedding") if self.defaults.space == "split" else ("embedding",)

    def build_model(self, in_channels: int, num_classes: int, backbone: str = "unet", **backbone_kwargs: Any):
        """The heads on ``backbone`` plus the class-mean readout (``semantic`` logits of Eq. 9)."""
        p = self.defaults
        kwargs = unet_defaults(p, backbone, backbone_kwargs)
        kwargs.setdefault("readout", {
            "kind": "class_means",
            "head": "semantic_embedding" if p.space == "split" else "embedding",
            "classes": max(int(num_classes), 2),
            "dim": int(p.embedding_dim),
            "init": p.init,
            "sigma": float(p.class_sigma_init),
            "name": "semantic",
        })
        return super().build_model(in_channels, num_classes, backbone, **kwargs)

    def spreads(self, outputs: Outputs) -> Tensor:
        """``[B, 2, H, W]`` positive spreads (instance, spatial in pixels) from the raw ``sigma`` head."""
        raw = outputs["sigma"].clamp(-RAW_CLAMP, RAW_CLAMP)
        scale = raw.new_tensor([self.defaults.sigma_init, self.defaults.spatial_sigma])[None, :, None, None]
        return scale * raw.exp()

    # -- training ----------------------------------------------------------
    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, Tensor]:
        """The terms of Eq. 16 (``seg, seg_mean, ins, ins_var, seed``) and their sum ``loss``."""
        p = self.defaults
        for name in ("embedding", "sigma", "seed", "semantic", "class_means"):
            if name not in outputs:
                raise LabkitError(f"method 'hle': model outputs lack {name!r}; build the model with HLE.build_model")
        semantic = semantic_target(batch)
        instances = batch["instances"]
        logits = outputs["semantic"]
        k = logits.shape[1]
        means = outputs["class_means"][0, :, 0, 0].reshape(k, -1)
        training = "class_pixel_counts" in outputs
        if training:  # count which classes lie inside instances
            count_thing_pixels(outputs["class_pixel_counts"], instances, semantic)
        return hle_loss(
            outputs["embedding"], self.spreads(outputs), torch.sigmoid(outputs["seed"]), logits, means,
            instances, semantic,
            semantic_embedding=outputs.get("semantic_embedding"), gamma=p.gamma, spatial_scale=p.spatial_sigma,
            instance_loss=p.instance_loss, semantic_loss=p.semantic_loss, lovasz_classes=p.lovasz_classes,
            class_mean_weight=p.class_mean_weight, seed_weight=p.seed_weight,
            instance_terms=not (training and self.semantic_only),
            ignore_index=IGNORE_INDEX,
        )

    # -- inference ---------------------------------------------------------
    def decode_grid(self) -> dict[str, list[Any]]:
        """Seed and kernel thresholds (Sec. 3.5, the two the paper tunes, with Optuna) and the seed-map blur."""
        return {"seed_threshold": [0.2, 0.35, 0.5, 0.65], "kernel_threshold": [0.3, 0.4, 0.5, 0.6],
                "seed_sigma": [0.0, 2.0, 3.0, 5.0]}

    def decode(self, outputs: Outputs, **params: Any) -> list[Prediction]:
        """One panoptic prediction per image (``instances, ids, classes, scores, semantic``).

        Accepted: ``seed_threshold``, ``seed_sigma``, ``kernel_threshold``, ``stuff_threshold``, ``min_area``,
        ``max_seeds``, ``instance_class`` (``"seed"`` or ``"mean"``), ``things`` (thing class ids;
        default: see the module docstring).
        """
        known = {"seed_threshold", "seed_sigma", "kernel_threshold", "stuff_threshold", "min_area", "max_seeds",
                 "things", "instance_class"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise LabkitError(f"unknown decoding parameter(s) {unknown} for 'hle'; known: {sorted(known)}")
        p = self.defaults
        k = outputs["semantic"].shape[1]
        things = params.get("things", p.things)
        if things is None and "thing_classes" in outputs:  # learnt in training, kept in the model state
            things = tuple(outputs["thing_classes"][0, :, 0, 0].nonzero(as_tuple=True)[0].tolist()) or None
        if things is None:
            things = tuple(range(1, k))
        opts = dict(
            seed_threshold=float(params.get("seed_threshold", p.seed_threshold)),
            seed_sigma=float(params.get("seed_sigma", p.seed_sigma)),
            kernel_threshold=float(params.get("kernel_threshold", p.kernel_threshold)),
            stuff_threshold=float(params.get("stuff_threshold", p.stuff_threshold)),
            min_area=int(params.get("min_area", p.min_area)),
            max_seeds=int(params.get("max_seeds", p.max_seeds)),
            things=tuple(int(c) for c in things),
            instance_class=str(params.get("instance_class", p.instance_class)),
        )
        spreads = self.spreads(outputs).detach()
        embedding = outputs["embedding"].detach()
        probs = outputs["semantic"].detach().float().softmax(dim=1)
        seeds = torch.sigmoid(outputs["seed"].detach().float())[:, 0]
        return [
            panoptic_decode(embedding[b], spreads[b], seeds[b], probs[b], **opts) for b in range(embedding.shape[0])
        ]


def count_thing_pixels(counts: Tensor, instances: Tensor, semantic: Tensor) -> None:
    """Add, per class, the labelled pixels and those inside instances to ``counts [K, 2]`` (in place)."""
    k = counts.shape[0]
    keep = semantic != IGNORE_INDEX
    labels = semantic[keep].long()
    if labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= k:
        return  # nothing to count, or hle_loss raises the error with a clear message
    inside = instances[keep] > 0
    with torch.no_grad():
        counts[:, 0] += torch.bincount(labels, minlength=k).to(counts.device)
        counts[:, 1] += torch.bincount(labels[inside], minlength=k).to(counts.device)


def panoptic_decode(
    embedding: Tensor,
    spreads: Tensor,
    seed: Tensor,
    probs: Tensor,
    *,
    things: tuple[int, ...] | list[int],
    seed_threshold: float = 0.5,
    seed_sigma: float = 0.0,
    kernel_threshold: float = 0.5,
    stuff_threshold: float = 0.0,
    min_area: int = 1,
    max_seeds: int = 256,
    instance_class: str = "seed",
) -> Prediction:
    """Sec. 3.5 on one image: ``embedding [D,H,W]`` (unit), ``spreads [2,H,W]``, ``seed [H,W]``, ``probs [K,H,W]``.

    Returns a prediction with ``semantic`` (see the module docstring for the steps).
    """
    if embedding.ndim != 3 or spreads.shape != (2, *embedding.shape[1:]) or seed.shape != embedding.shape[1:] \
            or probs.ndim != 3 or probs.shape[1:] != embedding.shape[1:]:
        raise LabkitError(
            f"hle decode: embedding [D,H,W], spreads [2,H,W], seed [H,W], probs [K,H,W] do not match: "
            f"{tuple(embedding.shape)}, {tuple(spreads.shape)}, {tuple(seed.shape)}, {tuple(probs.shape)}"
        )
    for name, value in (("seed_threshold", seed_threshold), ("kernel_threshold", kernel_threshold),
                        ("stuff_threshold", stuff_threshold)):
        if not 0.0 <= value <= 1.0:
            raise LabkitError(f"hle decode: {name} must lie in [0, 1], got {value}")
    if instance_class not in ("seed", "mean"):
        raise LabkitError(f"hle decode: instance_class must be 'seed' or 'mean', got {instance_class!r}")
    if int(max_seeds) < 1:
        raise LabkitError(f"hle decode: max_seeds must be >= 1, got {max_seeds}")
    if not seed_sigma >= 0:
        raise LabkitError(f"hle decode: seed_sigma must be >= 0 (pixels), got {seed_sigma}")
    device = embedding.device
    num_classes, height, width = probs.shape
    conf, classes = probs.max(dim=0)
    thing_ids = torch.as_tensor([c for c in things if 0 <= c < num_classes], dtype=torch.int64, device=device)
    is_thing = torch.isin(classes, thing_ids)
    if seed_sigma > 0:
        seed = smooth_seed_map(seed, seed_sigma)
    pooled = F.max_pool2d(seed[None, None], 3, stride=1, padding=1)[0, 0]
    candidates = (seed >= pooled) & (seed > seed_threshold) & is_thing
    flat = candidates.reshape(-1).nonzero(as_tuple=True)[0]
    scores = seed.reshape(-1)[flat]
    order = torch.argsort(scores, descending=True, stable=True)[: int(max_seeds)]
    flat, scores = flat[order], scores[order]
    e = embedding.reshape(embedding.shape[0], -1).float()
    sig = spreads.reshape(2, -1).float()
    xy = pixel_grid(height, width, device)
    kept: list[int] = []
    if len(flat):
        kernel = _kernel(e[:, flat], sig[:, flat], xy[:, flat], e[:, flat], xy[:, flat])  # [S, S], row = seed
        for j in range(len(flat)):
            if not kept or not bool((kernel[kept, j] > kernel_threshold).any()):
                kept.append(j)
    semantic = classes.clone()
    stuff_px = ~is_thing & (conf < stuff_threshold)
    semantic[stuff_px] = 0
    instances = torch.zeros(height * width, dtype=torch.int64, device=device)
    ids, cls, out_scores = [], [], []
    if kept:
        seeds_at = flat[kept]
        pixels = is_thing.reshape(-1).nonzero(as_tuple=True)[0]
        best = torch.empty(len(pixels), device=device)
        owner = torch.empty(len(pixels), dtype=torch.int64, device=device)
        chunk = max(1, (1 << 24) // max(len(seeds_at), 1))  # at most 16M kernel values at a time
        for start in range(0, len(pixels), chunk):
            part = pixels[start : start + chunk]
            phi = _kernel(e[:, seeds_at], sig[:, seeds_at], xy[:, seeds_at], e[:, part], xy[:, part])  # [S, P]
            best[start : start + chunk], owner[start : start + chunk] = phi.max(dim=0)
        joined = best > kernel_threshold
        owner = torch.where(joined, owner, -1)
        label = torch.full((height * width,), -1, dtype=torch.int64, device=device)
        label[pixels] = owner
        seed_classes = classes.reshape(-1)[seeds_at]
        flat_probs = probs.reshape(num_classes, -1)
        for s in range(len(seeds_at)):
            mask = label == s
            area = int(mask.sum())
            if area < max(int(min_area), 1):
                continue
            c = int(seed_classes[s])
            if instance_class == "mean":  # the thing class with the highest mean log-probability
                pooled = flat_probs[thing_ids][:, mask].clamp(min=1e-12).log().mean(dim=1)
                c = int(thing_ids[pooled.argmax()])
            new_id = len(ids) + 1
            instances[mask] = new_id
            ids.append(new_id)
            cls.append(c)
            out_scores.append(float(scores[kept[s]]) * float(flat_probs[c, mask].mean()))
        semantic_flat = semantic.reshape(-1)
        for new_id, c in zip(ids, cls):
            semantic_flat[instances == new_id] = c
    return {
        "instances": instances.reshape(height, width),
        "ids": torch.tensor(ids, dtype=torch.int64, device=device),
        "classes": torch.tensor(cls, dtype=torch.int64, device=device),
        "scores": torch.tensor(out_scores, dtype=torch.float32, device=device),
        "semantic": semantic,
    }


def smooth_seed_map(seed: Tensor, sigma: float) -> Tensor:
    """``seed [H, W]`` blurred by a separable Gaussian of ``sigma`` pixels (edge pixels repeated at the borders).

    A seed map that is a plateau over an object has its 3x3 local maxima
    wherever noise puts them; its blur peaks at the plateau's centre.
    """
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=seed.dtype, device=seed.device)
    taps = torch.exp(-offsets**2 / (2 * sigma**2))
    taps = taps / taps.sum()
    padded = F.pad(seed[None, None], (radius,) * 4, mode="replicate")
    return F.conv2d(F.conv2d(padded, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))[0, 0]


def _kernel(seed_e: Tensor, seed_sig: Tensor, seed_xy: Tensor, e: Tensor, xy: Tensor) -> Tensor:
    """``Phi[s, n] = exp(-(1 - e_s.e_n)/(2 sigma_s^2) - |rho_s - rho_n|^2/(2 sigma_sp,s^2))`` (Sec. 3.5)."""
    d_cos = 1.0 - seed_e.t() @ e
    d_sp = torch.cdist(seed_xy.t(), xy.t()) ** 2
    return torch.exp(-d_cos / (2 * seed_sig[0][:, None] ** 2) - d_sp / (2 * seed_sig[1][:, None] ** 2))


__all__ = ["HLE", "HLEParams", "count_thing_pixels", "panoptic_decode", "smooth_seed_map"]
