"""The second DVIS training stage: the verification head on the candidates of a trained, frozen FCN.

:func:`train_verifier` trains a :class:`~labkit.models.verification.VerificationHead`
through :func:`labkit.train.train` (so it checkpoints, resumes and stops on NaN
like every run) with a stage model, :class:`VerifierTraining`, whose forward
pass runs the frozen FCN, discretises its label map into candidates
(:func:`labkit.clustering.discretize.discretize`) and applies the head to
them, and a stage method, :class:`DVISVerification`, whose loss matches each
candidate to the ground truth:

* ``iou``: the IoU of the candidate with its best-matching ground-truth
  instance; the IoU head regresses it with a Huber loss (delta 0.1, the
  threshold of Sec. 3.3);
* class target: that instance's class when ``iou >= positive_iou``,
  background (0) when ``iou < negative_iou``, no class loss in between
  (authors' code: 0.2 and 0.1); cross-entropy.

Augmentation (ours; the paper does not say): in training, each candidate's
RoI inputs are shown under a random symmetry of the square
(``augment="dihedral"``, :func:`~labkit.models.verification.random_orientations`),
left-right flips only (``"flip"``) or as they are (``"none"``).  The head
sees the same few hundred candidates every epoch; turning them multiplies
the shapes it learns from by up to 8 (benchmarks/RESULTS.md, ``bench_dvis.py``).
Classes that depend on orientation (``digits``: a 6 turned is a 9) need
``"none"``; ``DVIS`` chooses it for a synthetic family that is not mirror-symmetric.

``loss = CE + iou_weight * Huber``.  :func:`load_verifier` reads the head back
from the stage's run folder.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.data.contract import IGNORE_INDEX
from labkit.errors import LabkitError
from labkit.methods.base import Batch, Method, Outputs
from labkit.models.verification import random_orientations

KIND = "dvis_verification"


@dataclasses.dataclass
class VerificationParams:
    """Stage-2 loss settings (copied from the DVIS parameters) and the discretisation it trains on."""

    positive_iou: float = 0.2
    negative_iou: float = 0.1
    iou_weight: float = 1.0
    augment: str = "none"  # train_verifier passes the DVIS setting (see the module docstring)
    discretize: dict = dataclasses.field(default_factory=dict)


class DVISVerification(Method):
    """Stage method for :func:`labkit.train.train`: the verification head's loss (not a registered method)."""

    key = KIND
    Params = VerificationParams

    def heads(self, num_classes: int) -> dict[str, int]:
        return {}

    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, Tensor]:
        """``classification`` (cross-entropy), ``iou`` (Huber) and ``loss``; both 0 without candidates."""
        p = self.defaults
        logits, pred_iou = outputs["class_logits"].float(), outputs["iou"].float()
        if logits.shape[0] == 0:
            zero = outputs["anchor"] * 0.0
            return {"classification": zero, "iou": zero, "candidates": zero, "loss": zero}
        iou, gt_class = match_candidates(outputs["masks"], outputs["image_index"], batch["instances"],
                                         batch.get("semantic"))
        target = torch.where(iou >= p.positive_iou, gt_class, torch.full_like(gt_class, -100))
        target = torch.where(iou < p.negative_iou, torch.zeros_like(gt_class), target)
        if bool((target >= 0).any()):
            ce = F.cross_entropy(logits, target.to(logits.device), ignore_index=-100)
        else:
            ce = logits.sum() * 0.0
        reg = F.huber_loss(pred_iou, iou.to(pred_iou.device), delta=0.1)
        return {"classification": ce, "iou": reg, "candidates": torch.tensor(float(len(iou))),
                "loss": ce + p.iou_weight * reg}


def match_candidates(masks: Tensor, image_index: Tensor, instances: Tensor,
                     semantic: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(iou, class)`` per candidate: IoU with its best-matching ground truth and that instance's class.

    ``masks`` bool ``[N,H,W]``, ``image_index [N]`` into the batch's
    ``instances [B,H,W]`` (and ``semantic``: majority class under the
    instance, ignoring 255; class 1 without a semantic map).  A candidate
    touching no ground truth has IoU 0 and class 0.
    """
    n = masks.shape[0]
    ious = torch.zeros(n)
    classes = torch.zeros(n, dtype=torch.int64)
    masks = masks.cpu()
    instances = instances.cpu()
    for b in image_index.unique().tolist():
        sel = (image_index.cpu() == b).nonzero(as_tuple=True)[0]
        inst = instances[b].reshape(-1)
        ids = inst.unique()
        ids = ids[ids > 0]
        if len(ids) == 0:
            continue
        onehot = (inst[None] == ids[:, None]).float()  # [G, HW]
        cand = masks[sel].reshape(len(sel), -1).float()  # [n, HW]
        inter = cand @ onehot.t()
        union = cand.sum(1, keepdim=True) + onehot.sum(1)[None] - inter
        iou = inter / union.clamp(min=1)
        best, which = iou.max(dim=1)
        gt_cls = torch.ones(len(ids), dtype=torch.int64)
        if semantic is not None:
            sem = semantic[b].cpu().reshape(-1)
            for k in range(len(ids)):
                values = sem[(inst == ids[k]) & (sem != IGNORE_INDEX)]
                if len(values):
                    gt_cls[k] = int(torch.bincount(values).argmax())
        ious[sel] = best
        classes[sel] = torch.where(best > 0, gt_cls[which], torch.zeros_like(which))
    return ious, classes


class VerifierTraining(nn.Module):
    """Stage model: frozen FCN -> candidates -> verification head; ``config`` names both.

    The FCN stays in eval mode (batch-norm statistics of a ResNet are not
    updated) and receives no gradient; its weights are saved with the head so
    a resumed stage sees the same candidates.
    """

    def __init__(self, fcn: nn.Module, head: nn.Module, discretize_options: dict[str, Any],
                 augment: str = "none") -> None:
        super().__init__()
        self.fcn = fcn
        self.fcn.requires_grad_(False)
        self.head = head
        self.options = dict(discretize_options)
        self.augment = augment
        self.config = {"kind": KIND, "in_channels": int(fcn.config["in_channels"]), "fcn": fcn.config,
                       "head": head.config}

    def train(self, mode: bool = True) -> "VerifierTraining":
        super().train(mode)
        self.fcn.eval()
        return self

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        from labkit.clustering.discretize import discretize
        from labkit.methods.dvis import label_map

        with torch.no_grad():
            out = self.fcn(image)
            f = label_map(out).float()
            features = out["features"].float()
        cands = [discretize(f[b], **self.options) for b in range(f.shape[0])]
        masks = torch.cat([c.masks for c in cands]).to(image.device)
        boxes = torch.cat([c.boxes for c in cands]).to(image.device)
        values = torch.cat([c.values for c in cands]).to(image.device)
        index = torch.cat([torch.full((len(c),), b, dtype=torch.int64) for b, c in enumerate(cands)]).to(image.device)
        if masks.shape[0] and self.training:
            rois = self.head.roi_inputs(features, f, masks, boxes, index, values)
            outputs = self.head.from_rois(random_orientations(rois, self.augment))
        else:
            outputs = self.head(features, f, masks, boxes, index, values)
        anchor = sum(p.sum() for p in self.head.parameters())  # keeps an empty batch attached to the graph
        return {**outputs, "masks": masks, "image_index": index, "anchor": anchor}


def train_verifier(method: Any, fcn: nn.Module, train_set: Any, *, out_dir: Path,
                   train_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Train the verification head of ``method`` (a DVIS) on ``fcn``'s candidates into ``out_dir``."""
    from labkit.models.verification import VerificationHead
    from labkit.train import train

    p = method.defaults
    if "features" not in fcn.config.get("heads", {}):
        raise LabkitError("dvis verification: the FCN has no 'features' head (build it with the dvis method)")
    kwargs = {k: v for k, v in train_kwargs.items() if k in (
        "batch_size", "device", "seed", "resume", "progress", "data_spec", "num_workers", "amp", "weight_decay")}
    kwargs.update(epochs=int(p.verifier_epochs), lr=float(p.verifier_lr))
    torch.manual_seed(int(kwargs.get("seed", 0)))
    head = VerificationHead(
        fcn.config["heads"]["features"], _num_classes(train_set), size=p.roi_size,
        convs=p.verifier_convs, width=p.verifier_width, hidden=p.verifier_hidden,
    )
    options = method.discretize_options()
    augment = roi_orientations(p.verifier_augment, train_set)
    stage = DVISVerification(positive_iou=p.positive_iou, negative_iou=p.negative_iou, iou_weight=p.iou_weight,
                             augment=augment,
                             discretize={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})
    model = VerifierTraining(fcn, head, options, augment=augment)
    return train(stage, model, train_set, out_dir=out_dir, **kwargs)


def roi_orientations(setting: str, train_set: Any) -> str:
    """``setting``; ``"auto"``: ``"none"`` for a synthetic family that is not mirror-symmetric, else ``"dihedral"``."""
    if setting != "auto":
        return setting
    family = getattr(train_set, "family", None)
    return "none" if family is not None and not family.mirror_symmetric else "dihedral"


def _num_classes(train_set: Any) -> int:
    """Classes of the head (background included): the dataset's ``num_classes``, else the largest semantic id + 1."""
    known = getattr(train_set, "num_classes", None)
    if known:
        return max(int(known), 2)
    largest = 1
    for i in range(len(train_set)):
        sem = train_set[i].get("semantic")
        if sem is not None:
            sem = sem[sem != IGNORE_INDEX]
            largest = max(largest, int(sem.max()) if sem.numel() else 1)
    return largest + 1


def load_verifier(source: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained verification head in a stage run folder (or its ``model.pt``), in eval mode."""
    from labkit import checkpoint as ckpt
    from labkit.models.verification import head_from_config

    state = ckpt.read_checkpoint(source, map_location=device)
    config = state["model"]["config"]
    if config.get("kind") != KIND:
        raise LabkitError(f"{source} is not a DVIS verification run (its model is {config.get('kind', 'an FCN')!r})")
    head = head_from_config(config["head"])
    head.load_state_dict({k[len("head."):]: v for k, v in state["model"]["state"].items() if k.startswith("head.")})
    return head.to(device).eval()
