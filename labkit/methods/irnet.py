"""``irnet``: Ahn, Cho & Kwak (CVPR 2019), instance segmentation from image-level labels only.

Stages (``labkit train --method irnet`` runs 1-3; stage 4 is any supervised
labkit method trained on the pseudo-label folder stage 3 writes):

1. **CAMs** (Sec. 3, Eq. 1): a classification network, global average pooling
   over a 1x1 classifier (the ``cam`` head, one channel per foreground
   class), trained with the multi-label soft-margin loss on the image-level
   ``labels``; CAMs from multi-scale and flipped inference, each class map
   divided by its maximum (:mod:`labkit.methods.irnet_cam`).
2. **Relation mining** (Sec. 4.2, Eq. 2-4): confident foreground (CAM > 0.30)
   and background (all CAMs < 0.05), both refined by a dense CRF on the
   image as in the authors' code, the rest ignored; pairs within
   ``train_radius`` split into P+fg, P+bg and P- (:mod:`labkit.losses.irnet`).
3. **IRNet** (Sec. 4, Eq. 5-9): a ``displacement`` head (2 channels, pixels)
   and a ``boundary`` head (1 logit) trained on the mined relations alone;
   then the dataset-mean displacement is subtracted (Sec. 4.2: "refined by
   subtracting the mean of D"), folded into the displacement head's bias.
   Pseudo labels for every training image (Sec. 5, Eq. 10-13,
   :mod:`labkit.methods.irnet_synthesis`) go to ``RUN_DIR/pseudo_labels`` as
   an instance folder (``images/``, ``masks/``, ``semantic/``, ``classes.json``).

Weak supervision: no mask reaches training.  :meth:`IRNet.loss` reads only
``labels`` (stage 1) or the mined ``relations`` (stage 3) from the batch
(:func:`weak_batch` drops every other key first), and stages 2-3 read the
data through :class:`labkit.data.weak.ImageLabels`, which never returns
``instances`` or ``semantic``: :meth:`IRNet.training_view` gives
``labkit train`` that view for stage 1 too (and no mask-based choice of the
best epoch), and ``weak_batch`` stays as a second firewall for callers of
:func:`labkit.train.train` that pass a whole dataset.  A test trains with
the masks scrambled and gets identical weights and pseudo labels.

Decoding a test image (``evaluate``/``predict``) uses the same model: the
image labels are predicted (pooled CAM logit > 0), the CAMs are single-scale,
and :func:`~labkit.methods.irnet_synthesis.synthesize` builds the instances
(``mode`` ``"irnet"``, ``"cam_boundary"`` or ``"cam"``).

Differences from the paper and the authors' code, chosen here:

* Network: labkit's CPU UNet instead of ResNet-50, maps at full resolution
  (the paper: stride 4 for IRNet, 16 for CAMs); the synthesis pools them to
  the paper's stride 4 for the walk at 512 x 1024 (``walk_stride``, see
  :mod:`labkit.methods.irnet_synthesis`), 2 at 256 x 256, and keeps stride 1
  for the 64 x 64 scenes.  The CAM network is a classification network
  of its own (``separate`` head): a UNet's encoder alone (``cam_width``,
  ``cam_depth``: 32 channels doubling over 3 poolings, stride 8), its class
  maps upsampled, as the paper reads CAMs from ResNet-50's stride-16
  features.  A full-resolution UNet with its decoder (labkit's first
  choice) stayed at the label prior on ``shapes`` through 6,000 steps where
  this encoder left it after about 4,000 (benchmarks/RESULTS.md).
* Stage 1's training, from scratch where the paper starts from ImageNet
  weights: by default 200 epochs (of 50 steps on synthetic data) of 16
  images, one-cycle schedule with peak lr 2e-3, about 10,000 steps.  On
  ``shapes`` the classifier sits at the label prior for about 4,000 steps
  before it learns; it memorised 1,000 scenes (its CAMs then name the
  wrong class), learnt objects but not their classes from 3,000 in 6,000
  steps, and the classes from 2,000 in 10,000 steps (benchmarks/RESULTS.md),
  hence a warning under :data:`FEW_IMAGES` training images.  Stage 3 keeps
  batches of 8 (``irn_batch_size``) and the training loop's default schedule.
* The displacement and boundary heads share a
  second UNet trained from scratch in stage 3, whose decoder merges all its
  levels (the paper's branches read the five levels of the frozen CAM
  backbone).  Stage 3 leaves the CAM network untouched (it gets no gradient).
  It is shallow (``depth=2``, a receptive field of about 40 pixels) on
  purpose: Eq. 5 constrains only differences of displacements within
  same-class pairs, so a field that sends every foreground pixel to one
  point of the image satisfies it as well as one that sends each to its own
  instance's centroid.  The paper relies on the network not knowing where in
  the image it is; a network that sees a whole 64 x 64 scene (and its zero
  padding) does know, and at depth 4 it learnt the single-point field
  (benchmarks/RESULTS.md).
* Radii: the paper's 10 (training) and 5 (inference) are in pixels of a
  stride-4 map of ~500-pixel VOC images, about a third of an object's size;
  the defaults here, ``train_radius=5, infer_radius=3`` at full resolution,
  keep that proportion for the 10-20 pixel objects of the 64 x 64 synthetic
  scenes.  Both are parameters.
* Centroid candidates ``|D| < centroid_threshold`` (authors: 2.5, stride-4
  pixels; here 1.5 full-resolution pixels); refinement ``refine_steps=100``
  (the paper; the authors' code 300).
* CAM scales 1.0, 1.5 and 2.0 (and flips): the authors' 0.5 is left out,
  because at 64 x 64 it reads a 4 x 4 class map, a blob over the whole scene
  (with it, the confident foreground mined from the CAMs was right about
  the class for 55% of its pixels, without it 66%; benchmarks/RESULTS.md).
* The dense CRF of stage 2 is labkit's own (``crf``, :mod:`labkit.clustering.dense_crf`;
  the authors' ``pydensecrf`` no longer builds), with the authors' settings except the width of
  the Gaussian (smoothness) kernel, ``crf_gaussian_sxy=1`` pixel where they use 3.  They run the
  CRF on VOC photographs of about 500 pixels, whose objects are a hundred pixels or more across;
  on the 64 x 64 scenes, with 10-20 pixel objects, 3 pixels smooths the confident labels across
  the object edges, so few mined pairs straddle an edge and the class-boundary branch learns a
  map with gaps (benchmarks/RESULTS.md).  Set 3 for images of VOC's size.  The bilateral
  kernel keeps the authors' ``sxy=50``: at 64 x 64 it is nearly a colour kernel over the whole
  scene, and narrowing it (7 pixels) spread the foreground labels into the background.
* The CAM head has a bias (labkit's heads are 1x1 convolutions with bias).
* ``pooling``: the paper's global average pooling by default; log-sum-exp
  (``"lse"``) and max pooling are offered for experiments, because on
  ``synthetic:shapes`` (every class in about 3 of 4 images) the short CPU
  trainings tried so far left the classifier at the loss of the label prior
  with either pooling, i.e. CAMs that do not localise (benchmarks/RESULTS.md).
* The authors train the displacement branch with a 10x learning rate; with
  Adam, whose steps do not depend on the gradient's scale, the equivalent is
  a displacement read as the head's output times ``displacement_scale=10``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.data.weak import ImageLabels, check_labels_vary
from labkit.errors import LabkitError
from labkit.losses.irnet import irnet_loss, multilabel_soft_margin
from labkit.methods import register
from labkit.methods.base import Batch, Method, Outputs, Prediction
from labkit.methods.irnet_cam import mine_relations, mine_relations_crf, multiscale_cams, normalize_cams
from labkit.methods.irnet_synthesis import MODES, synthesize

log = logging.getLogger(__name__)

PSEUDO_DIR = "pseudo_labels"
IRN_DIR = "irn"
#: fewer training images than this: stage 1's from-scratch classifier may memorise them (a warning)
FEW_IMAGES = 2000


@dataclasses.dataclass
class IRNetParams:
    """The paper's and authors' defaults (scaled to the synthetic scenes where noted in the module docstring)."""

    fg_threshold: float = 0.30  # confident foreground CAM (authors' code)
    bg_threshold: float = 0.05  # confident background CAM (authors' code)
    crf: bool = True  # refine the confident areas with the dense CRF (authors' code)
    crf_gaussian_sxy: float = 1.0  # the CRF's Gaussian kernel width, pixels (authors: 3 on ~500-pixel images)
    train_radius: int = 5  # pair radius gamma for training (paper: 10 at stride 4)
    infer_radius: int = 3  # pair radius for the random walk (paper: 5 at stride 4)
    beta: float = 10.0  # Eq. 12
    walk_steps: int = 256  # t of Eq. 13
    refine_steps: int = 100  # Eq. 10 iterations (paper 100, authors' code 300)
    centroid_threshold: float = 1.5  # |D| below this: centroid candidate (authors: 2.5 at stride 4)
    bg_level: float = 0.25  # background score after the walk
    min_area_fraction: float = 0.01  # pieces smaller than this fraction of the image are dropped
    walk_stride: int | None = None  # stride of the walk's maps (paper: 4); None: by image size (irnet_synthesis)
    cam_scales: tuple[float, ...] = (1.0, 1.5, 2.0)  # authors' 1.0, 0.5, 1.5, 2.0 without 0.5 (module docstring)
    cam_flip: bool = True
    width: int = 16  # UNet width (stage 3: displacement and boundary)
    depth: int = 2  # UNet downsamplings (stage 3; shallow on purpose, module docstring)
    cam_width: int = 32  # stage 1: channels of the CAM encoder's first level
    cam_depth: int = 3  # stage 1: poolings of the CAM encoder (stride 2**cam_depth)
    epochs: int = 200  # stage 1 (CAM network): 200 x 50 steps of 16 on synthetic data (module docstring)
    batch_size: int = 16  # stage 1
    schedule: str = "onecycle"  # stage 1
    lr: float = 2e-3  # stage 1, peak of the one-cycle schedule
    irn_epochs: int = 10  # stage 3 (displacement + boundary); 20 scored lower on shapes (benchmarks/RESULTS.md)
    irn_batch_size: int = 8
    irn_lr: float = 1e-3
    pooling: str = "gap"  # "gap" (the paper), "lse" (log-sum-exp, sharpness lse_r) or "max"
    lse_r: float = 5.0
    displacement_scale: float = 10.0  # displacement = head output x this (the authors' 10x lr of that branch)


POOLINGS = ("gap", "lse", "max")


def pool_cam(cam: torch.Tensor, pooling: str = "gap", r: float = 5.0) -> torch.Tensor:
    """Image logits ``[B, K]`` from class maps ``[B, K, H, W]``: mean (GAP), log-mean-exp ``(1/r) log mean exp(r x)``, or max."""
    if pooling == "gap":
        return cam.mean(dim=(2, 3))
    if pooling == "max":
        return cam.amax(dim=(2, 3))
    if pooling == "lse":
        flat = cam.flatten(2)
        return (torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r
    raise LabkitError(f"unknown CAM pooling {pooling!r}; choices: {', '.join(POOLINGS)}")


def weak_batch(batch: Batch) -> Batch:
    """The keys a weakly supervised loss may read: ``labels`` and ``relations`` (never masks)."""
    return {key: batch[key] for key in ("labels", "relations") if key in batch}


@register
class IRNet(Method):
    """CAMs + inter-pixel relations + random walk, trained from image-level labels (Ahn et al. 2019)."""

    key = "irnet"
    task = "instance"
    Params = IRNetParams

    def heads(self, num_classes: int) -> dict[str, int]:
        """``cam`` (one channel per foreground class), ``displacement`` (2) and ``boundary`` (1 logit)."""
        if int(num_classes) < 2:
            raise LabkitError(f"irnet needs at least one foreground class (num_classes >= 2), got {num_classes}")
        return {"cam": int(num_classes) - 1, "displacement": 2, "boundary": 1}

    def build_model(self, in_channels: int, num_classes: int, backbone: str = "unet", **backbone_kwargs: Any):
        """The CAM head on an encoder of its own (UNet backbone: ``cam_width``, ``cam_depth``);
        displacement and boundary share the other."""
        from labkit.models import build_model

        p = self.defaults
        kwargs = dict(backbone_kwargs)
        separate_kw = None
        if backbone == "unet":
            kwargs.setdefault("width", p.width)
            kwargs.setdefault("depth", p.depth)
            separate_kw = {"cam": {"width": p.cam_width, "depth": p.cam_depth, "decoder": False}}
        return build_model(in_channels=in_channels, heads=self.heads(num_classes), backbone=backbone,
                           separate=("cam",), separate_kw=separate_kw, **kwargs)

    # -- losses ------------------------------------------------------------
    def loss_heads(self, batch: Batch) -> tuple[str, ...]:
        """Stage 1 reads ``cam`` alone, stage 3 ``displacement`` and ``boundary``: each runs only its own network."""
        return ("displacement", "boundary") if "relations" in batch else ("cam",)

    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        """Stage 1 (batch without ``relations``): ``cls``; stage 3: Eq. 5, 6, 8 and their sum (Eq. 9)."""
        batch = weak_batch(batch)
        if "relations" in batch:
            terms = irnet_loss(self.displacement(outputs), outputs["boundary"], batch["relations"],
                               self.defaults.train_radius)
            return terms
        labels = batch.get("labels")
        if labels is None:
            raise LabkitError(
                "irnet trains from image-level labels, but the batch has no 'labels': use data with classes "
                "(synthetic families or instance folders with semantic masks)"
            )
        logits = pool_cam(outputs["cam"], self.defaults.pooling, self.defaults.lse_r)
        if labels.shape[1] != logits.shape[1] + 1:
            raise LabkitError(f"image labels have {labels.shape[1]} classes, the CAM head {logits.shape[1]} + background")
        cls = multilabel_soft_margin(logits, labels[:, 1:].to(logits))
        return {"cls": cls, "loss": cls}

    def displacement(self, outputs: Outputs) -> torch.Tensor:
        """The displacement field in pixels: the head's output times ``displacement_scale``."""
        return outputs["displacement"] * self.defaults.displacement_scale

    # -- decoding ----------------------------------------------------------
    def decode(self, outputs: Outputs, mode: str = "irnet", labels: torch.Tensor | None = None,
               **params: Any) -> list[Prediction]:
        """Pseudo-label synthesis on single-scale model outputs, one prediction per image.

        ``labels [B, K]`` (with background at 0) are the image labels; by
        default they are predicted: a class is present when its pooled CAM
        logit is > 0.  ``params`` override ``bg_level``, ``infer_radius``,
        ``beta``, ``walk_steps``, ``refine_steps``, ``centroid_threshold``,
        ``min_area_fraction``, ``walk_stride``.
        """
        raw = outputs["cam"].float()
        present = (raw.mean(dim=(2, 3)) > 0).float() if labels is None else labels[:, 1:].float()
        cams = normalize_cams(raw, present)
        boundary = torch.sigmoid(outputs["boundary"].float())[:, 0]
        return [
            synthesize(cams[b], boundary[b], self.displacement(outputs)[b].float(), mode=mode,
                       **self._synthesis_params(params))
            for b in range(raw.shape[0])
        ]

    def _synthesis_params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        p = dataclasses.replace(self.defaults, **{k: v for k, v in overrides.items() if k in _SYNTHESIS})
        unknown = sorted(set(overrides) - set(_SYNTHESIS))
        if unknown:
            raise LabkitError(f"unknown irnet decode parameter(s) {unknown}; known: mode, labels, {sorted(_SYNTHESIS)}")
        return {name: getattr(p, field) for field, name in _SYNTHESIS.items()}

    def decode_grid(self) -> dict[str, list[Any]]:
        """The background level after the walk and the centroid-candidate threshold."""
        return {"bg_level": [0.15, 0.25, 0.35, 0.5], "centroid_threshold": [1.0, 1.5, 2.5]}

    # -- stages 2-3 ------------------------------------------------------------
    def check_training_set(self, dataset: Any) -> None:
        """:func:`~labkit.data.weak.check_labels_vary`: images that all carry the same labels teach nothing;
        a warning under :data:`FEW_IMAGES` images (stage 1's classifier learns from scratch)."""
        check_labels_vary(dataset)
        if len(dataset) < FEW_IMAGES:
            log.warning(
                "irnet: %d training images. Stage 1 trains its classifier from scratch: on synthetic shapes it "
                "memorised 1,000 scenes (CAMs that name the wrong class) and generalised from 2,000 "
                "(benchmarks/RESULTS.md); with synthetic data, --samples sets the number of scenes", len(dataset))

    def training_view(self, dataset: Any) -> ImageLabels:
        """The image and its image-level labels only: no mask reaches any stage."""
        return ImageLabels(dataset)

    def post_train(self, model: nn.Module, train_set: Any, *, out_dir: Any, train_kwargs: dict[str, Any]) -> None:
        """Relation mining, IRNet training into ``out_dir/irn``, mean-displacement removal, pseudo labels.

        The final weights replace the model state of ``out_dir/model.pt`` (the
        CAM network in it is unchanged), so ``evaluate``/``predict`` on the run
        folder use all three heads.  Re-running resumes: stage 3 from its own
        checkpoint, and the pseudo-label folder is rewritten only when missing.
        """
        from labkit import checkpoint as ckpt
        from labkit.train import resolve_device, train

        out_dir = Path(out_dir)
        device = resolve_device(train_kwargs.get("device", "auto"))
        progress = bool(train_kwargs.get("progress", True))
        plain = ImageLabels(train_set, augment=False)
        maps = compute_maps(self, model, plain, device=device, progress=progress)
        relations = [self.mine(m["cams"], plain[i]["image"])
                     for i, m in enumerate(tqdm(maps, desc="irnet relations", disable=not progress, leave=False))]
        relation_set = RelationSet(plain, relations, transform=getattr(train_set, "transform", None))
        stage3 = {k: v for k, v in train_kwargs.items() if k not in ("epochs", "lr", "batch_size", "schedule")}
        train(self, model, relation_set, out_dir=out_dir / IRN_DIR, epochs=self.defaults.irn_epochs,
              lr=self.defaults.irn_lr, batch_size=self.defaults.irn_batch_size, **stage3)
        subtract_mean_displacement(model, plain, device=device, scale=self.defaults.displacement_scale)
        state = ckpt.read_checkpoint(out_dir / ckpt.CHECKPOINT_NAME)
        state.pop("format", None)
        state.pop("version", None)
        state["model"]["state"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        ckpt.save_checkpoint(out_dir / ckpt.CHECKPOINT_NAME, state)
        folder = out_dir / PSEUDO_DIR
        if not (folder / "summary.json").exists():
            maps = compute_maps(self, model, plain, device=device, progress=progress)
            predictions = [self.synthesize_maps(m, mode="irnet") for m in maps]
            write_pseudo_folder(folder, plain, predictions)

    def mine(self, cams: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Stage 2 on one image: the relation map ``[H, W]`` (class, 0 or 255 ignored) of its ``cams [K, H, W]``,
        refined by the dense CRF on ``image [C, H, W]`` when ``crf`` is set."""
        p = self.defaults
        if p.crf:
            return mine_relations_crf(image, cams, p.fg_threshold, p.bg_threshold, gaussian_sxy=p.crf_gaussian_sxy)
        return mine_relations(cams[None], p.fg_threshold, p.bg_threshold)[0]

    def synthesize_maps(self, maps: dict[str, torch.Tensor], mode: str = "irnet", **params: Any) -> Prediction:
        """Pseudo labels of one training image from :func:`compute_maps` output."""
        return synthesize(maps["cams"], maps["boundary"], maps["displacement"], mode=mode,
                          **self._synthesis_params(params))


_SYNTHESIS = {
    "infer_radius": "radius", "beta": "beta", "walk_steps": "steps", "bg_level": "bg_level",
    "refine_steps": "refine_steps", "centroid_threshold": "centroid_threshold",
    "min_area_fraction": "min_area_fraction", "walk_stride": "stride",
}


class RelationSet(torch.utils.data.Dataset):
    """Stage-3 training samples: the weak sample plus its mined ``relations`` map, augmented jointly."""

    def __init__(self, weak: ImageLabels, relations: Sequence[torch.Tensor], transform: Any = None) -> None:
        if len(weak) != len(relations):
            raise LabkitError(f"{len(relations)} relation maps for {len(weak)} images")
        self.weak, self.relations, self.transform = weak, list(relations), transform
        self.in_channels = getattr(weak, "in_channels", None) or int(weak[0]["image"].shape[0])
        for name in ("class_names", "things", "stuff"):
            if hasattr(weak, name):
                setattr(self, name, getattr(weak, name))

    def __len__(self) -> int:
        return len(self.weak)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.weak[index])
        sample["relations"] = self.relations[index].cpu()
        if self.transform is None:
            return sample
        # a crop pads with 0 (confident background for a relation map): mark the padding ignored instead
        sample["relations_inside"] = torch.ones_like(sample["relations"])
        sample = self.transform(sample)
        inside = sample.pop("relations_inside")
        sample["relations"] = torch.where(inside > 0, sample["relations"], torch.full_like(inside, 255))
        return sample


@torch.no_grad()
def compute_maps(
    method: IRNet, model: nn.Module, dataset: ImageLabels, *, device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """Per training image: multi-scale ``cams [K,H,W]`` for its labels, ``boundary [H,W]``, ``displacement [2,H,W]``.

    The boundary map is the mean of the image's and its mirror's predictions
    (as the authors' code); the displacement is from the image alone.
    """
    p = method.defaults
    was_training = model.training
    model.to(device).eval()
    out = []
    try:
        for i in tqdm(range(len(dataset)), desc="irnet maps", disable=not progress, leave=False):
            sample = dataset[i]
            image = sample["image"][None].to(device)
            labels = sample["labels"][None, 1:].to(device)
            cams = multiscale_cams(model, image, labels, p.cam_scales, p.cam_flip)[0]
            direct = model(image)
            mirrored = model(torch.flip(image, (-1,)))
            boundary = (torch.sigmoid(direct["boundary"]) + torch.flip(torch.sigmoid(mirrored["boundary"]), (-1,))) / 2
            out.append({"cams": cams.cpu(), "boundary": boundary[0, 0].cpu(),
                        "displacement": method.displacement(direct)[0].float().cpu()})
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def subtract_mean_displacement(
    model: nn.Module, dataset: Any, *, device: torch.device | str = "cpu", scale: float = 1.0
) -> torch.Tensor:
    """Sec. 4.2: subtract the dataset-mean displacement (pixels; head output x ``scale``), folded into the head's bias."""
    head = model.heads["displacement"]
    was_training = model.training
    model.to(device).eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    count = 0
    try:
        for i in range(len(dataset)):
            d = model(dataset[i]["image"][None].to(device))["displacement"][0] * scale
            total += d.double().sum(dim=(1, 2))
            count += d[0].numel()
    finally:
        model.train(was_training)
    mean = (total / max(count, 1)).float()
    head.bias -= (mean / scale).to(head.bias)
    log.info("irnet: subtracted the mean displacement (%.3f, %.3f) px", *mean.tolist())
    return mean


def write_pseudo_folder(folder: Path, dataset: ImageLabels, predictions: Sequence[Prediction]) -> None:
    """An instance folder of pseudo labels: ``images/``, ``masks/`` (16-bit), ``semantic/``, ``classes.json``.

    ``summary.json`` (written last) lists the images and instance counts and marks the folder complete.
    """
    from PIL import Image

    from labkit.io import atomic_open, write_json
    from labkit.workflows import save_instance_png

    folder = Path(folder)
    for sub in ("images", "masks", "semantic"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    counts = {}
    for i, pred in enumerate(predictions):
        name = dataset.name(i)
        image = dataset[i]["image"]
        arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        with atomic_open(folder / "images" / f"{name}.png", "wb") as f:
            Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(f, format="PNG")
        save_instance_png(folder / "masks" / f"{name}.png", pred["instances"])
        with atomic_open(folder / "semantic" / f"{name}.png", "wb") as f:
            Image.fromarray(pred["semantic"].numpy().astype(np.uint8)).save(f, format="PNG")
        counts[name] = len(pred["ids"])
    names = list(getattr(dataset, "class_names", None) or ["background", *[f"class{k}" for k in range(1, dataset.num_classes)]])
    (folder / "classes.json").write_text(json.dumps({
        "classes": names, "things": list(getattr(dataset, "things", None) or range(1, len(names))),
        "stuff": list(getattr(dataset, "stuff", None) or []),
    }))
    write_json(folder / "summary.json", {"images": len(counts), "instances": counts})




def pseudo_label_scores(
    method: IRNet, model: nn.Module, dataset: Any, *, modes: Sequence[str] = MODES, limit: int | None = None,
    device: torch.device | str = "cpu", progress: bool = True,
) -> dict[str, Any]:
    """The paper's Tables 1 and 2 on ``dataset`` (the training split, ground truth used only to score).

    Pseudo labels are synthesised from the image labels (:class:`ImageLabels`
    view) and compared with the masks the method never saw:
    ``{mode: {"ap50", "ap"}}`` (COCO mask AP, class-aware) for each mode of
    Table 1, and ``miou_cam`` / ``miou_propagated`` (Table 2: the semantic map
    of ``"cam"`` and of ``"cam_boundary"``).
    """
    from labkit.data.contract import ground_truth
    from labkit.metrics import coco_mask_ap
    from labkit.metrics.semantic import mean_iou

    n = len(dataset) if limit is None else min(limit, len(dataset))
    plain = _First(ImageLabels(dataset, augment=False).dataset, n)  # no augmentation
    maps = compute_maps(method, model, ImageLabels(plain), device=device, progress=progress)
    truths = [ground_truth(plain[i]) for i in range(n)]
    results: dict[str, Any] = {"n_images": n}
    for mode in modes:
        preds = [method.synthesize_maps(m, mode=mode) for m in tqdm(maps, desc=mode, disable=not progress, leave=False)]
        ap = coco_mask_ap(preds, truths)
        results[mode] = {"ap50": float(ap["ap50"]), "ap": float(ap["ap"]), "predictions": preds}
        if mode in ("cam", "cam_boundary"):
            key = "miou_cam" if mode == "cam" else "miou_propagated"
            results[key] = mean_iou([p["semantic"] for p in preds], [t["semantic"] for t in truths],
                                    num_classes=getattr(dataset, "num_classes", None))["miou"]
    results["maps"] = maps
    return results


class _First(torch.utils.data.Dataset):
    """The first ``n`` samples of ``dataset``, with its class metadata."""

    def __init__(self, dataset: Any, n: int) -> None:
        self.dataset, self.n = dataset, n
        for name in ("class_names", "things", "stuff", "in_channels", "num_classes"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[index]

    def name(self, index: int) -> str:
        return self.dataset.name(index) if hasattr(self.dataset, "name") else str(index)


__all__ = ["IRNet", "IRNetParams", "MODES", "RelationSet", "compute_maps", "pseudo_label_scores",
           "subtract_mean_displacement", "weak_batch", "write_pseudo_folder"]
