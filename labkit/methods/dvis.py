"""``dvis``: Deep Variational Instance Segmentation (NeurIPS 2020), one real-valued label per pixel.

The network (Sec. 4) outputs one channel ``f`` with a ReLU (the label map
``ReLU(f)``, :func:`label_map`); an instance is a plateau of equal value.
The losses take the raw ``f`` (Eq. 3 and 4 write the ReLU out; see
:mod:`labkit.losses.dvis` for why it matters).  Training minimises the discretised functional of
Eq. (2) (:func:`labkit.losses.dvis_loss`):

    ``loss = binary_weight L_b + pairwise_weight L_pi + mumford_shah_weight L_MS + quantization_weight L_q``

with the binary term of Eq. (3) (background to 0, foreground ``>= m1 = 2``),
the permutation-invariant pairwise term of Eq. (4)-(5) (``m2 = 1``, Huber
``theta = 0.1``) on pixel pairs from the stratified window of Sec. 4 or
uniform random pairs, the Cauchy Mumford-Shah term of Eq. (7) and the
quantisation term ``|f - Round(f)|``.

Loss weights are not in the paper.  The authors' code uses binary 10,
pairwise 0.2, Mumford-Shah 0.1, quantisation 0.5, but averages the pairwise
term only over pairs whose loss exceeds 1e-2 (most pairs are at zero loss),
which makes its 0.2 much stronger than 0.2 of a plain mean.  We average over
all sampled pairs (the integral of Eq. 2) and use binary 1, pairwise 1,
Mumford-Shah 0.1, quantisation 0.1: the two data terms equally, the two
regularisers an order of magnitude below as in the authors' ratio of
Mumford-Shah to binary.  All four are parameters.

Stratified window: the paper's ``w = 129, c = 8, r = 8`` is for 513-px
images (a quarter of the side).  labkit's synthetic scenes are 64 px, so the
defaults are ``window = 33, center = 4, dilation = 4`` (half the side: the
small images leave room for a wider, non-local window, which the paper's
supplementary finds important).

Decoding (Sec. 4): :func:`labkit.clustering.discretize.discretize` turns the
label map into candidates (1-D mean shift at bandwidths 0.9 and 0.4,
connected pieces (with ``piece_gap``, also pieces joined across narrow
gaps; with ``edge_threshold``, also cut where the map jumps), small and
low-valued pieces dropped, the two bandwidths pooled without duplicates).
Without a verification head every candidate is kept with score 1 and class 1.  With one (``verifier``: the folder that
:meth:`DVIS.post_train` trains, ``RUN_DIR/verification``), each candidate is
classified and its IoU predicted (:mod:`labkit.models.verification`), its
score is ``class_weight * class confidence + (1 - class_weight) * predicted
IoU``, and candidates scoring below ``verify_threshold`` are rejected.
Candidates of the two bandwidths may overlap, so predictions carry every
kept candidate under ``masks`` (as ``recurrent``'s pooled proposals), and
the ``instances`` map shows, per pixel, the best-scoring candidate, leaving
out those that better ones mostly cover (``min_visible``, ours: the paper
evaluates the overlapping candidates by AP and has no such map).

Verification head features: the method contract gives :meth:`decode` only
the model's outputs, so the model has a second head, ``features``, a 1x1
convolution initialised to the identity on the backbone's last features and
frozen (no loss reaches it): the outputs then carry the backbone features the
verification head RoIAligns.

Training on an image folder (``folder_params``, a user's few real images, as
``labkit train --data DIR`` does) takes the authors' code's pairwise term:
different pairs x3 and only the pair losses above 1e-2 averaged.  In a crop
of touching nuclei the pairs across two nuclei's border are few among many
satisfied ones; averaged with them, their gradient is too weak, and the
network gave a quarter to a third of the touching pairs one level (merged
by the discretisation; ``benchmarks/diag_dvis_touching.py``, figures in
benchmarks/RESULTS.md, own-images section).  Synthetic families keep the
paper's, with which the shapes figures were measured (the sticks figures use
uniform pairs and ``piece_gap``; ``benchmarks/bench_dvis.py`` says why).  A folder's
models are also decoded with ``edge_threshold = 0.3`` (ours): even with the
stronger pairwise term, some touching nuclei keep values closer than the
mean shift separates, but the map still steps between them (its 3x3 range
is far larger on the border between two touching nuclei than inside one, as
the Mumford-Shah term of Eq. 7 shapes it), so cutting the clusters at steps
above ``0.3 m2`` parts them; ``labkit tune`` also tries none and ``0.5 m2``.  Where
the map steps from one nucleus's value to a touching one's, the step's
pixels take the values in between and form a thin candidate of their own, a
false positive: a folder's models drop candidates thinner than ``min_radius =
4`` (ours, :func:`labkit.clustering.instance_radii`; tune also tries 0).  A folder
also keeps 40 epochs (of 20 steps): the 50 of the synthetic families were
chosen on ``shapes``, and on the nuclei folder one run of 50 did not do
better than the runs of 40 (RESULTS) while training a quarter longer.

Differences from the authors' code, where we follow the paper: ``m1 = 2``
(code: 1); different pairs weighted 1 (code: 3, ``different_weight``); every
pair averaged (code: only pair losses above 1e-2, ``min_pair_loss``); the
Huber of Eq. (5) on ``ReLU(m2 - f_d)`` (our reading of the text).
Candidates for training the verification head: IoU ``>= positive_iou``
(0.2, authors' code) with a ground truth take its class, IoU ``<
negative_iou`` (0.1) are background, those in between train only the IoU head.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.data.contract import IGNORE_INDEX
from labkit.errors import LabkitError
from labkit.losses.dvis import SAMPLINGS, dvis_loss, stratified_offsets
from labkit.methods import register
from labkit.methods.base import Batch, Method, Outputs, Prediction
from labkit.methods.embedding import THIN_RADIUS, empty_prediction, radius_grid, unet_defaults
from labkit.models.verification import ORIENTATIONS

log = logging.getLogger(__name__)

VERIFIER_DIR = "verification"


@dataclasses.dataclass
class DVISParams:
    """The paper's defaults (Sec. 3.3-4), our loss weights, decoding, verification and training defaults."""

    m1: float = 2.0  # Eq. (3): foreground at least m1 (paper; authors' code: 1)
    m2: float = 1.0  # Eq. (5): different instances at least m2 apart
    theta: float = 0.1  # Huber threshold (Sec. 3.3)
    binary_weight: float = 1.0
    pairwise_weight: float = 1.0
    mumford_shah_weight: float = 0.1
    quantization_weight: float = 0.1
    sampling: str = "stratified"  # or "random" (uniform pairs of instance pixels)
    window: int = 33  # stratified window w (paper: 129 at 513 px)
    center: int = 4  # every pixel within this distance (paper: 8)
    dilation: int = 4  # the rest of the window at this dilation (paper: 8)
    num_pairs: int = 4096  # random sampling: pairs per image
    different_weight: float = 1.0  # authors' code: 3
    min_pair_loss: float = 0.0  # average only pair losses above this (authors' code: 1e-2; 0 = all pairs, the paper)
    bandwidths: tuple[float, ...] = (0.9, 0.4)  # Sec. 4
    fg_threshold: float | None = None  # foreground = f > this; None = m1 / 2
    min_area: int = 8  # smallest candidate, pixels
    min_mean: float | None = None  # lowest mean label value of a candidate; None = fg_threshold
    duplicate_iou: float = 0.9  # pooled candidates overlapping an earlier one this much are duplicates
    max_candidates: int | None = 40  # largest kept per image (authors: 40 on VOC)
    piece_gap: int = 0  # > 0: a cluster's pieces within ~2x this many pixels also form one candidate (ours)
    edge_threshold: float | None = None  # cut clusters where the map's 3x3 range exceeds this (ours)
    min_radius: float = 0.0  # drop candidates thinner than this, pixels (ours; discretize step 4)
    verifier_epochs: int = 60  # second stage; 0 = no verification head
    verifier_lr: float = 1e-3
    roi_size: int = 14
    verifier_convs: int = 3
    verifier_width: int = 32
    verifier_hidden: int = 128
    verifier_augment: str = "auto"  # training RoIs turned: dihedral, flip, none; auto: see dvis_verification
    positive_iou: float = 0.2  # authors' code
    negative_iou: float = 0.1  # authors' code
    iou_weight: float = 1.0  # weight of the IoU head's Huber loss beside the cross-entropy
    class_weight: float = 0.5  # score = class_weight * confidence + (1 - class_weight) * predicted IoU
    verify_threshold: float = 0.2  # verified candidates scoring below are rejected
    min_visible: float = 0.5  # instance map: a candidate needs this fraction of its area free of better ones
    width: int = 16
    depth: int = 4
    coords: bool = False
    epochs: int = 50  # chosen on shapes with bench_dvis.py (benchmarks/RESULTS.md)
    lr: float = 2e-3


def check_params(p: DVISParams) -> None:
    """:class:`LabkitError` naming the first bad parameter."""
    for name in ("m1", "m2", "theta"):
        if not getattr(p, name) > 0:
            raise LabkitError(f"dvis: {name} must be > 0, got {getattr(p, name)}")
    for name in ("binary_weight", "pairwise_weight", "mumford_shah_weight", "quantization_weight",
                 "different_weight", "min_pair_loss", "iou_weight"):
        if getattr(p, name) < 0:
            raise LabkitError(f"dvis: {name} must be >= 0, got {getattr(p, name)}")
    if p.sampling not in SAMPLINGS:
        raise LabkitError(f"dvis: unknown sampling {p.sampling!r}; choices: {', '.join(SAMPLINGS)}")
    if p.verifier_augment not in ("auto", *ORIENTATIONS):
        raise LabkitError(
            f"dvis: unknown verifier_augment {p.verifier_augment!r}; choices: auto, {', '.join(ORIENTATIONS)}")
    stratified_offsets(p.window, p.center, p.dilation)
    if not p.bandwidths or any(not float(b) > 0 for b in p.bandwidths):
        raise LabkitError(f"dvis: bandwidths must be positive, got {p.bandwidths!r}")
    if not 0 <= p.negative_iou <= p.positive_iou <= 1:
        raise LabkitError(
            f"dvis: need 0 <= negative_iou <= positive_iou <= 1, got {p.negative_iou}, {p.positive_iou}")
    if p.edge_threshold is not None and not p.edge_threshold > 0:
        raise LabkitError(f"dvis: edge_threshold must be > 0 or None, got {p.edge_threshold}")
    if not p.min_radius >= 0:
        raise LabkitError(f"dvis: min_radius must be >= 0, got {p.min_radius}")
    check_min_visible(p.min_visible)
    if not 0 <= p.class_weight <= 1:
        raise LabkitError(f"dvis: class_weight must be in [0, 1], got {p.class_weight}")


@register
class DVIS(Method):
    """One-channel label map + variational loss + 1-D mean-shift discretisation + verification head."""

    key = "dvis"
    task = "instance"
    Params = DVISParams
    folder_params = {
        "different_weight": 3.0, "min_pair_loss": 1e-2, "epochs": 40, "edge_threshold": 0.3,
        "min_radius": THIN_RADIUS,
    }

    def __init__(self, **overrides: Any) -> None:
        if "bandwidths" in overrides and overrides["bandwidths"] is not None:
            b = overrides["bandwidths"]
            overrides["bandwidths"] = (float(b),) if isinstance(b, (int, float)) else tuple(float(x) for x in b)
        super().__init__(**overrides)
        check_params(self.defaults)
        self._verifiers: dict[str, nn.Module] = {}

    @property
    def fg_threshold(self) -> float:
        p = self.defaults
        return float(p.m1) / 2 if p.fg_threshold is None else float(p.fg_threshold)

    # -- model -----------------------------------------------------------
    def heads(self, num_classes: int) -> dict[str, int]:
        """``label`` (one channel, ReLU applied by :func:`label_map`) and ``features`` (frozen identity)."""
        return {"label": 1, "features": int(self.defaults.width)}

    def build_model(self, in_channels: int, num_classes: int, backbone: str = "unet", **backbone_kwargs: Any):
        """The ``label`` head on ``backbone`` and the identity ``features`` head (see the module docstring)."""
        from labkit.models import build_model

        kwargs = unet_defaults(self.defaults, backbone, backbone_kwargs)
        channels = int(kwargs["width"]) if backbone == "unet" else int(kwargs.get("decoder_channels", 128))
        model = build_model(in_channels=in_channels, heads={"label": 1, "features": channels}, backbone=backbone,
                            **kwargs)
        conv = model.heads["features"]
        with torch.no_grad():
            conv.weight.copy_(torch.eye(channels)[:, :, None, None])
            conv.bias.zero_()
        conv.requires_grad_(False)
        return model

    # -- training --------------------------------------------------------
    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, Tensor]:
        """``binary``, ``pairwise``, ``mumford_shah``, ``quantization`` (Sec. 3.3) and their weighted sum."""
        p = self.defaults
        semantic = batch.get("semantic")
        valid = None if semantic is None else semantic != IGNORE_INDEX
        return dvis_loss(
            raw_label(outputs), batch["instances"], valid, m1=p.m1, m2=p.m2, theta=p.theta,
            binary_weight=p.binary_weight, pairwise_weight=p.pairwise_weight,
            mumford_shah_weight=p.mumford_shah_weight, quantization_weight=p.quantization_weight,
            sampling=p.sampling, window=p.window, center=p.center, dilation=p.dilation, num_pairs=p.num_pairs,
            different_weight=p.different_weight, min_pair_loss=p.min_pair_loss,
        )

    def post_train(self, model: nn.Module, train_set: Any, *, out_dir: Any, train_kwargs: dict[str, Any]) -> None:
        """Second stage: train the verification head on the trained FCN's candidates into ``RUN_DIR/verification``.

        Runs through :func:`labkit.train.train` (resumable like every run)
        with the FCN frozen, then records the folder as the ``verifier`` in
        ``RUN_DIR/decode.json`` (other entries kept), so evaluate and predict
        verify by default.  Nothing to do when ``verifier_epochs`` is 0.
        """
        from labkit.methods.dvis_verification import train_verifier

        if int(self.defaults.verifier_epochs) <= 0:
            return
        train_verifier(self, model, train_set, out_dir=Path(out_dir) / VERIFIER_DIR, train_kwargs=train_kwargs)
        _record_verifier(Path(out_dir), Path(out_dir) / VERIFIER_DIR)

    # -- inference -------------------------------------------------------
    def decode_grid(self) -> dict[str, list[Any]]:
        """Foreground threshold, smallest candidate, edge cut, thinnest candidate, verification threshold and the
        map's ``min_visible``."""
        t = self.fg_threshold
        m2 = float(self.defaults.m2)
        return {
            "fg_threshold": [round(0.5 * t, 3), t, round(1.5 * t, 3)],
            "min_area": [4, 8, 16],
            "edge_threshold": [None, round(0.3 * m2, 3), round(0.5 * m2, 3)],
            "min_radius": radius_grid(self.defaults.min_radius),
            "verify_threshold": [0.05, 0.2, 0.4],
            "min_visible": [0.0, 0.3, 0.5],
        }

    DECODE_KEYS = ("bandwidths", "fg_threshold", "min_area", "min_mean", "duplicate_iou", "max_candidates",
                   "piece_gap", "edge_threshold", "min_radius", "verifier", "verify", "verify_threshold",
                   "class_weight", "min_visible")

    def decode(self, outputs: Outputs, **params: Any) -> list[Prediction]:
        """One prediction per image; ``params`` override the decoding defaults.

        Accepted: ``bandwidths``, ``fg_threshold``, ``min_area``, ``min_mean``,
        ``duplicate_iou``, ``max_candidates``, ``piece_gap``, ``edge_threshold``,
        ``min_radius`` (discretisation), ``verifier`` (a verification run folder or checkpoint, or a
        :class:`~labkit.models.verification.VerificationHead`), ``verify``
        (False: keep every candidate with score 1), ``verify_threshold``,
        ``class_weight``, ``min_visible`` (see :func:`candidates_prediction`).
        """
        unknown = sorted(set(params) - set(self.DECODE_KEYS))
        if unknown:
            raise LabkitError(f"unknown decoding parameter(s) {unknown} for 'dvis'; known: {sorted(self.DECODE_KEYS)}")
        opts = self.discretize_options(params)
        p = self.defaults
        head = self.verifier(params.get("verifier")) if params.get("verify", True) else None
        threshold = float(params.get("verify_threshold", p.verify_threshold))
        class_weight = float(params.get("class_weight", p.class_weight))
        min_visible = float(params.get("min_visible", p.min_visible))
        f = label_map(outputs).detach()
        features = outputs.get("features")
        predictions = []
        for b in range(f.shape[0]):
            cands = self.candidates(f[b], **opts)
            if head is None:
                scores = torch.ones(len(cands))
                classes = torch.ones(len(cands), dtype=torch.int64)
            else:
                if features is None:
                    raise LabkitError("dvis: verification needs the model's 'features' output")
                scores, classes, _, _ = verify(head, features[b:b + 1].detach(), f[b:b + 1], cands,
                                               class_weight=class_weight)
                scores, classes = scores.cpu(), classes.cpu()
            keep = scores >= threshold if head is not None else torch.ones(len(cands), dtype=torch.bool)
            predictions.append(candidates_prediction(cands.masks[keep], classes[keep], scores[keep], min_visible))
        return predictions

    def discretize_options(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`~labkit.clustering.discretize.discretize` (defaults, overridden by ``params``)."""
        params = params or {}
        p = self.defaults
        fg = params.get("fg_threshold", p.fg_threshold)
        fg = self.fg_threshold if fg is None else float(fg)
        bw = params.get("bandwidths", p.bandwidths)
        return {
            "bandwidths": (float(bw),) if isinstance(bw, (int, float)) else tuple(float(x) for x in bw),
            "fg_threshold": fg,
            "min_area": int(params.get("min_area", p.min_area)),
            "min_mean": params.get("min_mean", p.min_mean),
            "duplicate_iou": float(params.get("duplicate_iou", p.duplicate_iou)),
            "max_candidates": params.get("max_candidates", p.max_candidates),
            "piece_gap": int(params.get("piece_gap", p.piece_gap)),
            "edge_threshold": params.get("edge_threshold", p.edge_threshold),
            "min_radius": float(params.get("min_radius", p.min_radius)),
        }

    def candidates(self, f: Tensor, **opts: Any):
        """The :class:`~labkit.clustering.discretize.Candidates` of one label map ``[H,W]``."""
        from labkit.clustering.discretize import discretize

        return discretize(f, **(opts or self.discretize_options()))

    def verifier(self, source: Any) -> nn.Module | None:
        """The verification head of ``source`` (folder, checkpoint path or module), cached; None for None."""
        if source is None:
            return None
        if isinstance(source, nn.Module):
            return source.eval()
        key = str(Path(source).resolve())
        if key not in self._verifiers:
            from labkit.methods.dvis_verification import load_verifier

            self._verifiers[key] = load_verifier(source)
        return self._verifiers[key]


def raw_label(outputs: Outputs) -> Tensor:
    """The raw one-channel ``label`` output ``f`` as ``[B,H,W]``, before the ReLU (what the losses take)."""
    label = outputs["label"]
    if label.dim() != 4 or label.shape[1] != 1:
        raise LabkitError(f"dvis: the 'label' output must be [B,1,H,W], got {tuple(label.shape)}")
    return label[:, 0]


def label_map(outputs: Outputs) -> Tensor:
    """``ReLU(f)`` ``[B,H,W]`` of the one-channel ``label`` output (Sec. 4: "a ReLU activation on the FCN output")."""
    return torch.relu(raw_label(outputs))


@torch.no_grad()
def verify(head: nn.Module, features: Tensor, f: Tensor, cands: Any, *, class_weight: float = 0.5):
    """``(score, class, confidence, predicted IoU)`` of one image's candidates (``features [1,F,H,W]``, ``f [1,H,W]``)."""
    from labkit.models.verification import verification_scores

    device = next(head.parameters()).device
    n = len(cands)
    if n == 0:
        empty = torch.zeros(0, device=device)
        return empty, empty.long(), empty, empty
    out = head(features.to(device).float(), f.to(device).float(), cands.masks.to(device), cands.boxes.to(device),
               torch.zeros(n, dtype=torch.int64, device=device), cands.values.to(device))
    return verification_scores(out, class_weight)


def check_min_visible(min_visible: float) -> None:
    """``min_visible`` (method or decode parameter) must be a fraction."""
    if not 0 <= min_visible <= 1:
        raise LabkitError(f"dvis: min_visible must be in [0, 1], got {min_visible}")


def candidates_prediction(masks: Tensor, classes: Tensor, scores: Tensor, min_visible: float = 0.0) -> Prediction:
    """A prediction from possibly overlapping candidate ``masks [N,H,W]``: ranked by score, all under ``masks``.

    The ``instances`` map is painted best first, each candidate on the pixels
    no better one has taken; a candidate of which less than ``min_visible`` of
    its area is left free stays out of the map (Panoptic FPN's overlap rule,
    Kirillov et al. 2019), so the remnants of a candidate that better ones
    mostly cover are not left as fragments.  With 0 each pixel gets the
    best-scoring candidate covering it.
    """
    check_min_visible(min_visible)
    height, width = masks.shape[-2:]
    if masks.shape[0] == 0:
        return empty_prediction(height, width)
    order = torch.argsort(scores.float(), descending=True, stable=True)
    masks, classes, scores = masks[order].bool(), classes[order].long(), scores[order].float()
    n = masks.shape[0]
    ids = torch.arange(1, n + 1, dtype=torch.int64)
    instances = torch.zeros(height, width, dtype=torch.int64)
    for k in range(n):
        free = masks[k] & (instances == 0)
        if free.sum() >= min_visible * masks[k].sum():
            instances[free] = k + 1
    return {"instances": instances, "ids": ids, "classes": classes, "scores": scores, "masks": masks}


def _record_verifier(run_dir: Path, folder: Path) -> None:
    """Set ``verifier`` in ``RUN_DIR/decode.json``, keeping its other entries."""
    import json

    from labkit.io import write_json

    path = run_dir / "decode.json"
    params: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            params = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            log.warning("%s is not valid JSON; rewriting it with the verifier only", path)
    params["verifier"] = str(folder.resolve())
    write_json(path, params)
