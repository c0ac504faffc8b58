"""``discriminative``: De Brabandere, Neven & Van Gool (2017), a pull/push loss in Euclidean space.

The network predicts a ``D``-dimensional embedding per pixel and, alongside
it, semantic logits (background + the data's classes).  Training minimises

    ``loss = alpha L_var + beta L_dist + gamma L_reg + semantic_weight CE + instance_class_weight CE_inst``

where ``L_var, L_dist, L_reg`` are Eq. (1)-(3) of the paper
(:func:`labkit.losses.discriminative_loss`; pixels of one instance are pulled
to within ``delta_v`` of their mean, means of different instances pushed
``2 delta_d`` apart, means drawn weakly towards the origin) applied per
semantic class when the data has classes, ``CE`` is the pixel-wise
cross-entropy of the semantic head and ``CE_inst`` the cross-entropy of each
ground-truth instance's mean semantic logits
(:func:`labkit.methods.semantic.instance_cross_entropy`).  As in the paper,
whose semantic masks come from a separate segmentation network (ResNet-38),
the semantic head has a network of its own by default
(``separate_semantic``); both are trained together, on the one summed loss.

Decoding (Sec. 2, "we apply a fast variant of the mean-shift algorithm to
shift to a center pixel around which to cluster"): inside the predicted
foreground, the embeddings are clustered by labkit's seeded mean shift with
bandwidth ``delta_v``; a mode within ``delta_d`` of a mode holding more pixels
is merged into it (at zero loss modes of different instances are
``2 delta_d`` apart, so two modes that close are fragments of one instance);
every foreground pixel then joins the nearest mode when it lies within
``delta_d`` of it (half the distance the loss keeps modes apart), and stays
unlabelled otherwise.  When the loss was applied per class, instances of
different classes were never pushed apart, so a cluster is cut into its
spatially separate pieces where those are of different predicted classes
(:func:`labkit.methods.embedding.split_classes`).  Each instance is scored by
its foreground and class confidence times its compactness, the fraction of
its pixels within ``delta_v`` of its mode (pixels the pull term no longer
moves), so a loose cluster or an uncertain blob ranks low
(:func:`labkit.methods.embedding.build_prediction`).

Differences from the authors' code and the paper, chosen here:

* Defaults ``delta_v=0.5, delta_d=1.5, alpha=beta=1, gamma=0.001``, 8-dim
  embedding: the authors' code (the short paper gives no numbers).
* The paper clusters by thresholding around seeds with bandwidth ``delta_v``
  and assigns only the pixels inside that ball; with imperfect embeddings an
  instance then falls apart into a main cluster and small fragments, each a
  false positive.  We merge modes closer than ``merge_radius = delta_d``,
  assign every foreground pixel within ``assign_radius = delta_d`` of a mode
  to its nearest mode, and drop clusters smaller than ``min_area`` pixels.  ``merge_radius=0,
  assign_radius=delta_v`` come closest to the paper's clusters.
* The authors cluster each predicted class separately; with a semantic head
  whose pixel classes are noisy inside an object, that cuts objects into
  per-class fragments.  Clustering all foreground and splitting clusters only
  into separate pieces of different classes keeps them whole.
* The semantic network is a second UNet of the embedding network's size,
  trained at the same time (the paper: a separately trained ResNet-38).
  Sharing one network between both heads (``separate_semantic=False``)
  halves the cost and suits one-class data such as ``sticks``, but on
  ``synthetic:shapes`` the shared features did not learn the four shape
  classes: the cross-entropy stayed on the plateau of class-agnostic
  foreground, which the separate network leaves.
* ``CE_inst`` is ours.  Even the separate network can sit on that plateau
  for a number of epochs that varies from seed to seed, because every pixel
  of a uniformly textured shape has to name the class on its own.  With the
  instance term the pixels that see a corner or a tip decide for the whole
  instance; decoding pools the same way (an instance's class has the highest
  mean log-probability over its pixels).

* On an image folder (``folder_params``, a user's few real images, as
  ``labkit train --data DIR`` does) instances thinner than ``min_radius = 4``
  join their neighbours (:func:`labkit.clustering.absorb_thin_instances`):
  the pixels between two touching objects can embed between the two and
  form a thin cluster of their own, a false positive.

The measurements behind these choices (dated, with their commands) are in
``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from labkit.data.contract import IGNORE_INDEX
from labkit.errors import LabkitError
from labkit.losses import discriminative_loss
from labkit.methods import register
from labkit.methods.base import Batch, Method, Outputs, Prediction
from labkit.methods.embedding import (
    THIN_RADIUS, build_prediction, empty_prediction, foreground, radius_grid, semantic_target, split_classes,
    split_components, unet_defaults,
)
from labkit.methods.semantic import instance_cross_entropy, semantic_cross_entropy


#: seeds are shifted against at most this many foreground pixels (see :func:`cluster_embeddings`)
SHIFT_POINTS = 16384
#: default cap on the seeds tried per image: far more than the objects of any scene; beyond it, seeds only
#: visit stragglers, which join their nearest mode (within ``assign_radius``) anyway
MAX_SEEDS = 1024


@dataclasses.dataclass
class DiscriminativeParams:
    """The paper's (authors' code) defaults, plus decoding and training defaults."""

    embedding_dim: int = 8
    delta_v: float = 0.5  # pull margin, Eq. (1)
    delta_d: float = 1.5  # push margin, Eq. (2): centres closer than 2 delta_d repel
    alpha: float = 1.0  # weight of L_var
    beta: float = 1.0  # weight of L_dist
    gamma: float = 0.001  # weight of L_reg
    per_class: bool = True  # apply the loss per semantic class (and split clusters by class when decoding)
    semantic_weight: float = 1.0  # weight of the semantic cross-entropy (pixels)
    instance_class_weight: float = 1.0  # weight of the cross-entropy of each instance's mean logits
    separate_semantic: bool = True  # the semantic head gets a network of its own (the paper: a separate network)
    bandwidth: float | None = None  # mean-shift bandwidth; None = delta_v
    merge_radius: float | None = None  # modes this close to a larger one merge into it; None = delta_d
    assign_radius: float | None = None  # pixels farther from every mode stay unlabelled; None = delta_d
    min_area: int = 8  # smallest instance kept, in pixels
    min_radius: float = 0.0  # thinner instances join their neighbours (absorb_thin_instances); 0 = off
    max_seeds: int | None = None  # seeds tried per image; None = foreground pixels / 64, within [256, MAX_SEEDS]
    split_components: bool = False  # spatially separate pieces of one cluster become separate instances
    # with split_components: a piece needs this fraction of its cluster's largest piece to stand alone
    # (smaller ones join the largest); 0 = every piece of min_area pixels stands alone
    piece_fraction: float = 0.0
    width: int = 16  # UNet width (channels of the first level)
    depth: int = 4  # UNet downsamplings
    coords: bool = False  # pixel-coordinate input channels (UNet), see labkit.models.unet
    epochs: int = 40
    lr: float = 2e-3


@register
class Discriminative(Method):
    """Pixel embedding + discriminative loss + seeded mean shift (De Brabandere et al. 2017)."""

    key = "discriminative"
    task = "instance"
    Params = DiscriminativeParams
    folder_params = {"min_radius": THIN_RADIUS}

    def heads(self, num_classes: int) -> dict[str, int]:
        """``embedding`` (``embedding_dim`` channels) and ``semantic`` (one logit per class)."""
        return {"embedding": int(self.defaults.embedding_dim), "semantic": max(int(num_classes), 2)}

    def build_model(self, in_channels: int, num_classes: int, backbone: str = "unet", **backbone_kwargs: Any):
        """The heads on ``backbone``; the UNet's ``width``, ``depth`` and ``coords`` default to the method's.

        With ``separate_semantic`` the semantic head has a backbone of its own.
        """
        kwargs = unet_defaults(self.defaults, backbone, backbone_kwargs)
        if self.defaults.separate_semantic:
            kwargs.setdefault("separate", ("semantic",))
        return super().build_model(in_channels, num_classes, backbone, **kwargs)

    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, Tensor]:
        """``var``, ``dist``, ``reg`` (Eq. 1-3), ``semantic`` and ``instance_class`` (cross-entropies), weighted sum."""
        p = self.defaults
        semantic = semantic_target(batch)
        terms = discriminative_loss(
            outputs["embedding"], batch["instances"], semantic,
            delta_v=p.delta_v, delta_d=p.delta_d, alpha=p.alpha, beta=p.beta, gamma=p.gamma,
            per_class=p.per_class, ignore_index=IGNORE_INDEX,
        )
        ce = semantic_cross_entropy(outputs["semantic"], semantic)
        instance_ce = instance_cross_entropy(outputs["semantic"], batch["instances"], semantic)
        return {
            "var": terms["var"], "dist": terms["dist"], "reg": terms["reg"], "semantic": ce,
            "instance_class": instance_ce,
            "loss": terms["loss"] + p.semantic_weight * ce + p.instance_class_weight * instance_ce,
        }

    @property
    def bandwidth(self) -> float:
        """The mean-shift bandwidth decoding uses unless told otherwise (``delta_v`` unless set)."""
        p = self.defaults
        return float(p.delta_v if p.bandwidth is None else p.bandwidth)

    def decode_grid(self) -> dict[str, list[Any]]:
        """What ``labkit tune`` sweeps: the mean-shift bandwidth (0.5 to 1.5 x the default, delta_v),
        splitting clusters into their connected pieces, the smallest instance kept (1 and 4 x min_area) and
        ``min_radius`` (off, and the folder default :data:`~labkit.methods.embedding.THIN_RADIUS`)."""
        p = self.defaults
        return {
            "bandwidth": [round(self.bandwidth * f, 4) for f in (0.5, 0.75, 1.0, 1.5)],
            "split_components": [p.split_components, not p.split_components],
            "min_area": [p.min_area, 4 * p.min_area],
            "min_radius": radius_grid(p.min_radius),
        }

    def decode(self, outputs: Outputs, **params: Any) -> list[Prediction]:
        """One scored prediction per image; ``params`` override the decoding defaults.

        Accepted: ``bandwidth``, ``merge_radius``, ``assign_radius``, ``min_area``, ``min_radius``, ``max_seeds``,
        ``split_components`` (off by default: a stick crossed by another is in two pieces),
        ``piece_fraction`` (see :func:`labkit.methods.embedding.split_components`), ``per_class``
        and ``things`` (class ids that count as objects; default: every
        non-background class).
        """
        opts = self._decode_options(params)
        embedding, logits = outputs["embedding"].detach(), outputs["semantic"].detach()
        return [self.decode_one(embedding[b], logits[b], **opts) for b in range(embedding.shape[0])]

    def _decode_options(self, params: dict[str, Any]) -> dict[str, Any]:
        known = {
            "bandwidth", "merge_radius", "assign_radius", "min_area", "min_radius", "max_seeds", "split_components",
            "per_class", "things", "piece_fraction",
        }
        unknown = sorted(set(params) - known)
        if unknown:
            raise LabkitError(f"unknown decoding parameter(s) {unknown} for {self.key!r}; known: {sorted(known)}")
        p = self.defaults
        bandwidth = params.get("bandwidth")
        merge = params.get("merge_radius", p.merge_radius)
        radius = params.get("assign_radius", p.assign_radius)
        return {
            "bandwidth": self.bandwidth if bandwidth is None else float(bandwidth),
            "merge_radius": float(p.delta_d if merge is None else merge),
            "assign_radius": float(p.delta_d if radius is None else radius),
            "min_area": int(params.get("min_area", p.min_area)),
            "min_radius": float(params.get("min_radius", p.min_radius)),
            "max_seeds": params.get("max_seeds", p.max_seeds),
            "split": bool(params.get("split_components", p.split_components)),
            "piece_fraction": float(params.get("piece_fraction", p.piece_fraction)),
            "per_class": bool(params.get("per_class", p.per_class)),
            "things": params.get("things"),
        }

    def decode_one(
        self, embedding: Tensor, logits: Tensor, *, bandwidth: float, merge_radius: float,
        assign_radius: float, min_area: int, max_seeds: int | None, split: bool, per_class: bool,
        things: Any = None, piece_fraction: float = 0.0, min_radius: float = 0.0,
    ) -> Prediction:
        """Cluster one image's embedding ``[D,H,W]`` inside the foreground of ``logits [K,H,W]``."""
        height, width = embedding.shape[1:]
        probs, fg = foreground(logits, things)
        if not fg.any():
            return empty_prediction(height, width, embedding.device)
        points = embedding.reshape(embedding.shape[0], -1).t()
        index = fg.reshape(-1).nonzero(as_tuple=True)[0]
        seeds = min(max(256, len(index) // 64), MAX_SEEDS) if max_seeds is None else int(max_seeds)
        assignment, quality = cluster_embeddings(
            points[index], bandwidth, assign_radius, merge_radius, min_size=min_area, max_seeds=seeds
        )
        labels = torch.zeros(height * width, dtype=torch.int64, device=embedding.device)
        labels[index] = assignment + 1
        labels = labels.reshape(height, width)
        if per_class:
            labels, quality = split_classes(labels, probs[1:].argmax(dim=0) + 1, quality)
        if split:
            labels, quality = split_components(labels, quality, min_fraction=piece_fraction)
        return build_prediction(labels, probs, quality, min_area=min_area, min_radius=min_radius)


def cluster_embeddings(
    points: Tensor, bandwidth: float, assign_radius: float, merge_radius: float = 0.0, *,
    min_size: int = 1, max_seeds: int = 1000, seed: int = 0, max_shift_points: int | None = SHIFT_POINTS,
) -> tuple[Tensor, Tensor]:
    """Seeded mean shift of ``points [N, D]``; ``(assignment [N], quality [M])``.

    The modes come from :func:`labkit.clustering.seeded_mean_shift` (at most
    ``max_seeds`` seeds; a ball adding fewer than ``min_size`` new points
    makes no mode); modes
    closer than ``merge_radius`` to a mode with more points are dropped (the
    larger one absorbs them).  ``assignment`` is then the index of each point's
    nearest mode, ``-1`` for a point farther than ``assign_radius`` from every
    mode; ``quality`` is, per mode, the fraction of its points within
    ``bandwidth`` of it.  Seeds are shifted against at most ``max_shift_points``
    of the points (a fixed random subset; every point below that, as on 64x64
    scenes), so a 512x1024 image costs a shift about what a 128x128 one does;
    the balls and the assignment use every point.
    """
    from labkit.clustering import seeded_mean_shift

    points = points.float()
    modes, _ = seeded_mean_shift(points, bandwidth, min_size=min_size, max_tries=max_seeds, seed=seed,
                                 max_shift_points=max_shift_points)
    if len(modes) == 0:
        return torch.full((len(points),), -1, dtype=torch.int64, device=points.device), points.new_zeros(0)
    if merge_radius > 0 and len(modes) > 1:
        modes = _merge_close_modes(points, modes, merge_radius)
    nearest, assignment = torch.cdist(points, modes).min(dim=1)
    assignment = torch.where(nearest <= assign_radius, assignment, -1)
    inside = assignment >= 0
    counts = torch.bincount(assignment[inside], minlength=len(modes)).float()
    tight = torch.bincount(assignment[inside & (nearest <= bandwidth)], minlength=len(modes)).float()
    return assignment, tight / counts.clamp(min=1)


def _merge_close_modes(points: Tensor, modes: Tensor, radius: float) -> Tensor:
    """Keep modes by decreasing support (points nearest to them), dropping those within ``radius`` of a kept one."""
    support = torch.bincount(torch.cdist(points, modes).argmin(dim=1), minlength=len(modes))
    kept: list[int] = []
    for m in torch.argsort(support, descending=True, stable=True).tolist():
        if not kept or bool(torch.cdist(modes[m][None], modes[kept]).min() > radius):
            kept.append(m)
    return modes[kept]
