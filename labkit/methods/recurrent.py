"""``recurrent``: Kong & Fowlkes (CVPR 2018), recurrent pixel embedding for instance grouping.

The network predicts a unit-length ``D``-dim embedding per pixel (the
``embedding`` head is L2-normalised) and semantic logits alongside it
(Sec. 5.4 trains cross-entropy "alongside our embedding loss").

Training (Sec. 3 and 4.2), per image:

1. at most ``max_pixels`` pixels are sampled uniformly (Sec. 3.1), background
   included as one more group by default;
2. the recurrent mean-shift module (Eq. 3, von Mises-Fisher kernel
   ``K = exp(delta^2 X^T X)``, step ``eta``, iterates re-projected onto the
   sphere) is unrolled ``iterations`` loops on the sampled embeddings,
   keeping every iterate ``X^0 .. X^T``;
3. the pairwise loss of Eq. 2 (calibrated cosine similarity, margin
   ``alpha``, instance-size weights ``w_i = 1 / |I_q|``) is evaluated at every
   loop and accumulated (Sec. 4.2), so the gradient flows back through the
   grouping; :func:`labkit.losses.recurrent_grouping_loss`.

The total is ``grouping + semantic_weight * CE``.

The kernel bandwidth is tied to the margin as in Sec. 4.1:
``1 / delta = (1 - alpha) / 3``, "so that the cluster separation (margin) in
the learned embedding space is three standard deviations of the kernel"
(``delta = 6`` at the default ``alpha = 0.5``). ``1 / delta`` is the standard
deviation of the paper's Gaussian ``exp(-delta^2 / 2 |x - y|^2)``, which on
the sphere is the vMF kernel of concentration ``delta^2`` (36); the paper's
``K = exp(delta X^T X)`` read literally (concentration 6) is a kernel wider
than the margin that merges separated groups, and Eq. 2 then rises through
the loops instead of falling (see :mod:`labkit.clustering.recurrent`). The
iterates are re-projected onto the sphere after every loop, as in the
authors' code (Eq. 3 as written leaves the sphere).

Weighting (``pair_weighting``): ``"paper"`` (default) divides both terms of
Eq. 2 by ``Q^2`` (``Q`` groups in the sample), so an instance's own pairs
weigh ``1 / Q`` of the whole and the positive term is ``Q - 1`` times lighter
than the negative one.  With a few objects per scene (digits: ``Q`` = 3-6)
that is harmless; in a 128 x 128 crop of touching nuclei (``Q`` ~ 10-16) a
trained embedding put one nucleus on two or three directions while the
logged positive term stayed small, and the decoding cut nuclei into pieces
(benchmarks/RESULTS.md, own-images section).  ``"balanced"`` (a deviation)
averages the positive term over the ``Q`` instances and the negative one
over the ``Q (Q - 1)`` ordered pairs, as the discriminative loss does
(:func:`labkit.losses.recurrent.pair_loss`).

Training on an image folder (``folder_params``, a user's few real images, as
``labkit train --data DIR`` does) replaces three paper defaults: the
``"balanced"`` weighting, no background group (``include_background=False``:
the background is left to the semantic head, so a crop's many nuclei are
not outweighed by one large group) and ``lr = 2e-3``.  On two 256 x 256
nuclei images these lift the tuned test matching accuracy from far below the
``watershed`` baseline (paper defaults) to about its level, not above it in
every run (figures: benchmarks/RESULTS.md, own-images section); synthetic
families keep the paper's defaults, with which the digits targets were
measured (there ``lr = 2e-3`` left training on a plateau).  A folder's
models are also decoded with ``min_radius = 4`` (ours,
:func:`labkit.clustering.absorb_thin_instances`): the pixels on the border
between two touching nuclei embed between the two nuclei and converge to a
mode of their own, a thin band that counted as a false positive; the band now
joins its neighbours.  ``labkit tune`` also tries 0 (needed where the objects
themselves are under 7 pixels across).

Decoding (the authors released none; our reading of Sec. 4-5): inside the
predicted foreground, at most ``decode_pixels`` pixels are sampled and moved
by ``decode_iterations`` loops of the same recurrent mean shift, which
collapses each group onto a mode (Fig. 4).  Converged points closer than
three kernel standard deviations (chord ``|x - y| < 3 / delta``, i.e.
``cos > 1 - 4.5 / delta^2``) are merged into one mode, and every foreground
pixel joins the mode most similar to its embedding, unless that calibrated
similarity is below ``alpha`` (then it stays unlabelled).  With
``split_components`` (default) the spatially separate pieces of one group
become separate instances: a convolutional network gives look-alike objects
in different places the same embedding.  An instance's score is the mean
semantic confidence of its class times its compactness, the mean vMF kernel
value ``exp(delta^2 (cos - 1))`` between its pixels and its mode.

Proposals (Sec. 5.3, footnote 4: "we run the mean shift grouping with
multiple smaller bandwidth parameters, pool the results, and remove redundant
proposals"): the grouping is repeated with the concentration ``delta^2``
multiplied by each of ``proposal_scales`` (a factor 4 halves the kernel's
width, a factor 1/4 doubles it), the results are pooled and redundant
proposals removed (:func:`pool_proposals`); the prediction carries the
overlapping proposals under ``masks``, ranked in the order of the groupings
(the tied bandwidth first), and the instance map of the first grouping.  The
paper pools to go beyond its ~10 proposals per image; a digits scene has 2-5
objects, so the other groupings fill the ten proposals of AR@10 with
alternative splits and merges of touching digits.  Deviation: the default
scales are *below* 1 (wider kernels), not the paper's smaller bandwidths: on
the digits ``val`` split the wider groupings added recall and the narrower
ones almost none (figures in ``benchmarks/RESULTS.md``).
``proposal_scales=()`` keeps one grouping.

Loop counts: training unrolls ``iterations`` loops and decoding runs
``decode_iterations``; see the field comments of :class:`RecurrentParams`
and ``benchmarks/RESULTS.md`` for the measurement behind them.

Position: the small UNet gets two pixel-coordinate input channels by
default (``coords``, :mod:`labkit.models.unet`; not in the paper, whose
ResNet on PASCAL images sees objects that differ in appearance).  Digits of
one scene share their ink and background, and a translation-equivariant
network gives look-alike digits the same embedding, so touching digits
cannot be told apart without position.

Defaults: ``alpha = 0.5`` and a 64-dim embedding (the paper's setting for
real data; a 3-dim embedding, as in the paper's toy Fig. 4, needs the margin
of Proposition 2, see :func:`labkit.losses.max_margin_for_instances`),
``eta = 1`` (Gaussian blurring mean shift), 10 decoding loops (Fig. 4).  The
authors sample <= 4000 pixels per image; CPU training uses 500.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from labkit.clustering.recurrent import concentration, delta_from_margin
from labkit.data.contract import IGNORE_INDEX
from labkit.errors import LabkitError
from labkit.losses import recurrent_grouping_loss, sample_pixels
from labkit.methods import register
from labkit.methods.base import Batch, Method, Outputs, Prediction
from labkit.methods.embedding import (
    THIN_RADIUS, build_prediction, empty_prediction, foreground, radius_grid, semantic_target, split_components,
    unet_defaults,
)
from labkit.methods.semantic import semantic_cross_entropy
from labkit.metrics.inputs import contingency


@dataclasses.dataclass
class RecurrentParams:
    """The paper's defaults, plus decoding and training defaults."""

    embedding_dim: int = 64
    alpha: float = 0.5  # margin of Eq. 2 (negative pairs pay [s - alpha]_+)
    delta: float | None = None  # kernel inverse std (concentration delta^2); None = 3 / (1 - alpha) (Sec. 4.1)
    eta: float = 1.0  # mean-shift step of Eq. 3
    normalize: bool = True  # re-project the iterates onto the sphere after every loop (authors' code)
    # loops unrolled during training (loss accumulated over all); on a trained model Eq. 2 levels off after
    # about 3 loops, so more would cost time for little gradient (benchmarks/RESULTS.md, "recurrent")
    iterations: int = 3
    max_pixels: int = 500  # pixels sampled per image for the loss (authors: <= 4000 on a GPU)
    include_background: bool = True  # background is one more group in Eq. 2
    pair_weighting: str = "paper"  # "paper": pos and neg over Q^2; "balanced": pos over Q, neg over Q(Q-1)
    semantic_weight: float = 1.0
    # loops at inference (Fig. 4 shows 10): Eq. 2 no longer rises after the training's 3, and the 7 more
    # loops tighten the groups before mode merging (digits val AR50@10 higher than with 3; RESULTS.md)
    decode_iterations: int = 10
    decode_pixels: int = 2000  # foreground pixels moved by mean shift at inference
    # groupings at the concentration delta^2 x these are pooled as proposals (footnote 4)
    proposal_scales: tuple[float, ...] = (0.5, 0.25)  # wider kernels; chosen on the digits val split (RESULTS.md)
    min_area: int = 8  # smallest instance kept, in pixels
    min_radius: float = 0.0  # thinner instances join their neighbours (absorb_thin_instances); 0 = off
    split_components: bool = True  # spatially separate pieces of one cluster become separate instances
    width: int = 16  # UNet width (channels of the first level)
    depth: int = 4  # UNet downsamplings
    coords: bool = True  # pixel-coordinate input channels (UNet): look-alike digits need them, see the docstring
    epochs: int = 40
    lr: float = 1e-3  # 2e-3 left digits training on a plateau (benchmarks/RESULTS.md)


@register
class Recurrent(Method):
    """Unit-sphere embedding + Eq. 2 loss through unrolled recurrent mean shift (Kong & Fowlkes 2018)."""

    key = "recurrent"
    task = "instance"
    Params = RecurrentParams
    folder_params = {"pair_weighting": "balanced", "include_background": False, "lr": 2e-3, "min_radius": THIN_RADIUS}

    @property
    def delta(self) -> float:
        """The kernel's inverse standard deviation ``delta`` (tied to ``alpha`` unless set; concentration ``delta^2``)."""
        p = self.defaults
        return float(p.delta) if p.delta is not None else delta_from_margin(float(p.alpha))

    def decode_grid(self) -> dict[str, list[Any]]:
        """``delta`` around the tied value (concentrations ``delta^2`` x 0.5, 1, 2 and 4), the smallest
        instance kept (1 and 4 x ``min_area``, as ``discriminative`` sweeps it: on a folder of 256 x 256 nuclei
        the slivers a tile's edge or a boundary leaves are false positives larger than 8 pixels) and
        ``min_radius`` (off, and the folder default :data:`THIN_RADIUS`)."""
        p = self.defaults
        return {
            "delta": [round(self.delta * math.sqrt(k), 4) for k in (0.5, 1.0, 2.0, 4.0)],
            "min_area": [int(p.min_area), 4 * int(p.min_area)],
            "min_radius": radius_grid(p.min_radius),
        }

    def map_only(self, params: dict[str, Any]) -> dict[str, Any]:
        """No proposal groupings (``proposal_scales=()``): the instance map is the first grouping's either way,
        and its scores are then the grouping's own rather than rescaled to rank above the other groupings'."""
        return {**params, "proposal_scales": ()}

    def heads(self, num_classes: int) -> dict[str, int]:
        """``embedding`` (``embedding_dim``, unit norm) and ``semantic`` (one logit per class)."""
        return {"embedding": int(self.defaults.embedding_dim), "semantic": max(int(num_classes), 2)}

    def normalized_heads(self) -> tuple[str, ...]:
        return ("embedding",)

    def build_model(self, in_channels: int, num_classes: int, backbone: str = "unet", **backbone_kwargs: Any):
        """The heads on ``backbone``; the UNet's ``width``, ``depth`` and ``coords`` default to the method's."""
        return super().build_model(in_channels, num_classes, backbone, **unet_defaults(self.defaults, backbone,
                                                                                      backbone_kwargs))

    def grouping_module(self, iterations: int | None = None):
        """The recurrent mean-shift module (Eq. 3) with this method's ``delta`` and ``eta``."""
        from labkit.clustering import RecurrentMeanShift

        p = self.defaults
        return RecurrentMeanShift(
            alpha=p.alpha, delta=self.delta, eta=p.eta, normalize=bool(p.normalize),
            iterations=p.iterations if iterations is None else int(iterations),
        )

    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, Tensor]:
        """``grouping`` (Eq. 2 accumulated over loops ``t = 0..T``), ``loss_t<k>`` per loop, ``semantic``, total."""
        p = self.defaults
        semantic = semantic_target(batch)
        grouping = self.grouping_loss(outputs["embedding"], batch["instances"], semantic != IGNORE_INDEX)
        ce = semantic_cross_entropy(outputs["semantic"], semantic)
        terms = {k: v for k, v in grouping.items() if k != "loss"}
        return {**terms, "grouping": grouping["loss"], "semantic": ce, "loss": grouping["loss"] + p.semantic_weight * ce}

    def grouping_loss(
        self, embedding: Tensor, instances: Tensor, valid: Tensor | None = None, *,
        iterations: int | None = None, sample: bool = True, generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Sec. 4.2 on the pixels of each image, averaged over the batch.

        ``embedding [B,D,H,W]``, ``instances [B,H,W]``, ``valid`` bool ``[B,H,W]``
        (false = ignored).  At most ``max_pixels`` pixels per image are sampled
        (with ``generator``) unless ``sample`` is false.  Returns ``pos``,
        ``neg``, ``loss`` (summed over loops) and ``loss_t0 .. loss_tT``.
        """
        p = self.defaults
        module = self.grouping_module(iterations)
        samples = sample_pixels(
            embedding, instances, max_pixels=p.max_pixels if sample else None, generator=generator,
            ignore_mask=None if valid is None else ~valid, include_background=p.include_background,
        )
        per_image = [
            recurrent_grouping_loss(module(s.embedding), s.ids, alpha=p.alpha, weighting=p.pair_weighting)
            for s in samples
        ]
        return {k: torch.stack([t[k] for t in per_image]).mean() for k in per_image[0]}

    def gradient_map(self, embedding: Tensor, instances: Tensor, loops: int) -> Tensor:
        """``[H,W]`` norm of the gradient of the loss after ``loops`` mean-shift loops w.r.t. each embedding.

        ``embedding [D,H,W]`` (one image), ``instances [H,W]``; every pixel
        takes part (no sampling).  ``loops = 0`` is the plain pairwise loss;
        comparing it with ``loops = 1`` is the paper's Fig. 5: through the
        grouping module the gradient concentrates on pixels that mean shift
        would not fix by itself.
        """
        x = embedding.detach()[None].clone().requires_grad_(True)
        terms = self.grouping_loss(x, instances[None], iterations=loops, sample=False)
        terms[f"loss_t{loops}"].backward()
        return x.grad[0].norm(dim=0)

    def decode(self, outputs: Outputs, **params: Any) -> list[Prediction]:
        """One scored prediction per image; ``params`` override the decoding defaults.

        Accepted: ``decode_iterations``, ``decode_pixels``, ``min_area``,
        ``min_radius``, ``split_components``, ``delta``, ``proposal_scales``,
        ``seed`` (of the pixel subsample) and ``things``.
        """
        known = {
            "decode_iterations", "decode_pixels", "min_area", "min_radius", "split_components", "delta",
            "proposal_scales", "seed", "things",
        }
        unknown = sorted(set(params) - known)
        if unknown:
            raise LabkitError(f"unknown decoding parameter(s) {unknown} for {self.key!r}; known: {sorted(known)}")
        p = self.defaults
        delta = float(params.get("delta") or self.delta)
        scales = params.get("proposal_scales", p.proposal_scales)
        opts = {
            "iterations": int(params.get("decode_iterations", p.decode_iterations)),
            "max_pixels": int(params.get("decode_pixels", p.decode_pixels)),
            "min_area": int(params.get("min_area", p.min_area)),
            "min_radius": float(params.get("min_radius", p.min_radius)),
            "split": bool(params.get("split_components", p.split_components)),
            "deltas": (delta, *(delta * math.sqrt(float(k)) for k in scales or ())),  # concentration x k
            "things": params.get("things"),
        }
        seed = int(params.get("seed", 0))
        embedding, logits = outputs["embedding"].detach(), outputs["semantic"].detach()
        return [  # one generator per image: a prediction does not depend on the batch it came in
            self.decode_one(embedding[b], logits[b], generator=torch.Generator().manual_seed(seed), **opts)
            for b in range(embedding.shape[0])
        ]

    def decode_one(
        self, embedding: Tensor, logits: Tensor, *, iterations: int, max_pixels: int, min_area: int,
        split: bool, deltas: tuple[float, ...], things: Any = None, generator: torch.Generator | None = None,
        min_radius: float = 0.0,
    ) -> Prediction:
        """Group one image's embedding ``[D,H,W]`` inside the foreground of ``logits [K,H,W]``.

        ``deltas[0]`` gives the instance map; with more than one, the groupings
        at every ``delta`` are pooled into overlapping proposals
        (:func:`pool_proposals`, returned under ``masks``).
        """
        height, width = embedding.shape[1:]
        probs, fg = foreground(logits, things)
        if not fg.any():
            return empty_prediction(height, width, embedding.device)
        index = fg.reshape(-1).nonzero(as_tuple=True)[0]
        points = torch.nn.functional.normalize(embedding.reshape(embedding.shape[0], -1).t()[index].float(), dim=1)
        subset = points
        if len(points) > max_pixels:
            subset = points[torch.randperm(len(points), generator=generator)[:max_pixels].to(points.device)]
        levels = []
        for delta in deltas:
            assignment, quality = self.group(points, subset, delta=delta, iterations=iterations)
            labels = torch.zeros(height * width, dtype=torch.int64, device=embedding.device)
            labels[index] = assignment + 1
            labels = labels.reshape(height, width)
            if split:
                labels, quality = split_components(labels, quality)
            levels.append(build_prediction(labels, probs, quality, min_area=min_area, min_radius=min_radius))
        return levels[0] if len(levels) == 1 else pool_proposals(levels)

    def group(self, points: Tensor, subset: Tensor, *, delta: float, iterations: int) -> tuple[Tensor, Tensor]:
        """Cluster unit vectors ``points [P, D]``; ``(assignment [P], quality [M])``.

        ``subset`` (some of the points) is moved by ``iterations`` loops of
        recurrent mean shift with the kernel ``exp(delta^2 x.y)``; converged
        points closer than three kernel standard deviations (chord
        ``|x - y| < 3 / delta``, i.e. ``cos > 1 - 4.5 / delta^2``) are merged
        into modes (:func:`merge_modes`), and every point joins its most
        similar mode (``-1`` when the calibrated similarity is below
        ``alpha``).  ``quality`` is each mode's mean vMF kernel value
        ``exp(delta^2 (cos - 1))`` over its points.
        """
        from labkit.clustering import RecurrentMeanShift

        p = self.defaults
        module = RecurrentMeanShift(alpha=p.alpha, delta=delta, eta=p.eta, normalize=bool(p.normalize),
                                    iterations=iterations)
        kappa = concentration(delta)
        modes = merge_modes(module(subset)[-1], similarity=1 - 2.25 / kappa)  # calibrated: cos > 1 - 4.5 / kappa
        best, assignment = (points @ modes.t()).max(dim=1)
        assignment = torch.where((1 + best) / 2 >= p.alpha, assignment, -1)
        inside = assignment >= 0
        counts = torch.bincount(assignment[inside], minlength=len(modes)).float()
        kernel = torch.exp(kappa * (best - 1))
        compact = torch.zeros(len(modes), device=points.device).index_add_(0, assignment[inside], kernel[inside])
        return assignment, compact / counts.clamp(min=1)


def pool_proposals(levels: list[Prediction], redundant_iou: float = 0.9) -> Prediction:
    """Pool the predictions of several bandwidths into one list of overlapping proposals.

    Kong & Fowlkes (footnote 4 of Sec. 5.3): "we run the mean shift grouping
    with multiple smaller bandwidth parameters, pool the results, and remove
    redundant proposals".  Proposals are ranked level by level (every
    proposal of ``levels[0]`` before any of ``levels[1]``, and so on; within a
    level by score), and a proposal whose mask overlaps an earlier one with
    IoU >= ``redundant_iou`` is dropped.  To keep that order under a plain
    sort by score, a score ``s`` of level ``l`` out of ``L`` becomes
    ``(s + L - 1 - l) / L``.  The result's ``instances`` map is that of
    ``levels[0]`` and ``masks [N,H,W]`` holds every proposal.  The IoUs come
    from one joint histogram of two levels' label maps (:func:`labkit.metrics.inputs.contingency`),
    so the cost grows with the pixels, not with pixels x proposals^2.
    """
    first = levels[0]
    count = len(levels)
    maps = [pred["instances"].reshape(-1).cpu().numpy() for pred in levels]
    kept: list[Tensor] = []  # per level, the ids kept
    masks, classes, scores = [], [], []
    for level, pred in enumerate(levels):
        ids = pred["ids"].cpu()
        fresh = torch.ones(len(ids), dtype=torch.bool)
        for earlier in range(level):  # a level's own instances are disjoint: only earlier levels can repeat one
            if len(ids) and len(kept[earlier]):
                table = torch.from_numpy(contingency(maps[level], maps[earlier], int(maps[level].max()),
                                                     int(maps[earlier].max())))
                inter = table[ids][:, kept[earlier]]
                union = table.sum(1)[ids][:, None] + table.sum(0)[kept[earlier]][None, :] - inter
                fresh &= ~(inter.float() / union.clamp(min=1).float() >= redundant_iou).any(dim=1)
        kept.append(ids[fresh])
        for k in fresh.nonzero(as_tuple=True)[0].tolist():
            masks.append(pred["instances"] == int(ids[k]))
            classes.append(pred["classes"][k])
            scores.append((pred["scores"][k] + count - 1 - level) / count)
    if not masks:
        return first
    return {
        "instances": first["instances"],
        "ids": torch.arange(1, len(masks) + 1, dtype=torch.int64, device=first["instances"].device),
        "classes": torch.stack(classes),
        "scores": torch.stack(scores).float(),
        "masks": torch.stack(masks),
    }


def merge_modes(points: Tensor, similarity: float) -> Tensor:
    """Greedy grouping of (nearly converged) unit vectors ``[N, D]`` into modes ``[M, D]``.

    Repeatedly takes the point with the most neighbours of calibrated
    similarity ``(1 + cos) / 2 >= similarity``, makes the normalised mean of
    those neighbours a mode and removes them.  Modes come out by decreasing
    support.
    """
    points = torch.nn.functional.normalize(points.float(), dim=1)
    threshold = 2 * similarity - 1  # on the cosine
    close = (points @ points.t()) >= threshold
    remaining = torch.ones(len(points), dtype=torch.bool, device=points.device)
    support = close.sum(dim=1)  # neighbours among the remaining points, kept up to date below
    modes = []
    while remaining.any():
        centre = int(support.masked_fill(~remaining, -1).argmax())
        members = close[centre] & remaining
        modes.append(torch.nn.functional.normalize(points[members].mean(dim=0), dim=0))
        remaining &= ~members
        support -= close[:, members].sum(dim=1)  # O(N |members|): no N x N temporary per mode
    if not modes:
        return points.new_zeros(0, points.shape[1])
    return torch.stack(modes)
