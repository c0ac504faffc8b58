"""``semantic``: per-pixel classification with cross entropy (the reference method).

Not one of the five embedding papers: it is the plain baseline every notebook
starts from and the method the training loop is tested with. One head,
``"semantic"``, predicts ``num_classes`` logits per pixel (background is class 0).

Targets are ``batch["semantic"]``; class-agnostic data without a semantic map
trains foreground (``instances > 0``, class 1) against background. Pixels
labelled ``ignore_index`` (255) add nothing to the loss or its gradient.

:meth:`SemanticSegmentation.decode` returns, per image, the argmax class map
under ``"semantic"`` and, as instances, the connected components of each
predicted class (:func:`class_components`), scored by their mean class
probability: touching objects of one class merge, which is exactly the gap the
embedding methods close, and why its mask AP is a useful anchor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from labkit.data.contract import IGNORE_INDEX
from labkit.errors import LabkitError
from labkit.methods import register
from labkit.methods.base import Batch, Method, Outputs, Prediction


def semantic_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean per-pixel cross entropy over the pixels not labelled ``ignore_index``.

    ``logits`` ``[B, K, H, W]``, ``target`` int64 ``[B, H, W]`` in ``0..K-1``
    or ``ignore_index``. With ``class_weights`` ``[K]`` it is the weighted mean
    ``sum_i w[y_i] * l_i / sum_i w[y_i]`` (as :func:`torch.nn.functional.cross_entropy`).
    Returns 0 (still connected to ``logits`` for autograd) when every pixel is ignored.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise LabkitError(
            f"semantic loss: logits [B,K,H,W] and target [B,H,W] do not match: "
            f"{tuple(logits.shape)} vs {tuple(target.shape)}"
        )
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    out_of_range = target[valid] >= logits.shape[1]
    if out_of_range.any():
        raise LabkitError(
            f"semantic loss: target class {int(target[valid][out_of_range].max())} but the "
            f"model predicts only {logits.shape[1]} classes"
        )
    return F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index)


def instance_cross_entropy(
    logits: torch.Tensor, instances: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Cross entropy of each instance's mean logits against its class, averaged over the instances.

    ``logits [B, K, H, W]``, ``instances`` int ``[B, H, W]`` (0 = none; ids
    are per image), ``target`` int64 ``[B, H, W]`` (class per pixel or
    ``ignore_index``).  For instance ``q`` with (non-ignored) pixels ``I_q``
    and class ``c_q`` (the majority of ``target`` over ``I_q``)::

        l = 1/Q sum_q CE(1/|I_q| sum_{i in I_q} z_i, c_q)

    The pixel-wise cross-entropy asks every pixel, even one deep inside a
    uniformly textured object, to name the class on its own; pooling first
    lets the pixels that carry the evidence (the corners of a square, the
    tips of an ellipse) decide for the whole instance, which is also how
    decoding names an instance's class (mean log-probability over its pixels,
    :func:`labkit.methods.embedding.build_prediction`).  Does not depend on
    which id an instance has; returns 0 (attached to ``logits``) without
    instances.
    """
    if logits.ndim != 4 or instances.shape != target.shape or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise LabkitError(
            f"instance loss: logits [B,K,H,W], instances and target [B,H,W] do not match: "
            f"{tuple(logits.shape)}, {tuple(instances.shape)}, {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    keep = (instances > 0) & (target != ignore_index)
    if not keep.any():
        return logits.sum() * 0.0
    image = torch.arange(logits.shape[0], device=logits.device)[:, None, None].expand_as(instances)
    key = torch.stack([image[keep], instances[keep].long()], dim=1)
    _, group = torch.unique(key, dim=0, return_inverse=True)
    count = int(group.max()) + 1
    pixel_logits = logits.permute(0, 2, 3, 1)[keep]  # [P, K]
    pixel_classes = target[keep]
    sums = pixel_logits.new_zeros(count, num_classes).index_add_(0, group, pixel_logits)
    sizes = torch.bincount(group, minlength=count).to(pixel_logits.dtype)
    votes = torch.zeros(count, int(pixel_classes.max()) + 1, device=logits.device)
    votes.index_put_((group, pixel_classes), torch.ones_like(group, dtype=votes.dtype), accumulate=True)
    classes = votes.argmax(dim=1)
    if bool((classes >= num_classes).any()):
        raise LabkitError(
            f"instance loss: target class {int(classes.max())} but the model predicts only {num_classes} classes"
        )
    return F.cross_entropy(sums / sizes[:, None], classes)


@dataclass
class SemanticParams:
    """``class_weights``: one weight per class (``None``: all 1); ``ignore_index``: unlabelled pixels."""

    class_weights: tuple[float, ...] | None = None
    ignore_index: int = IGNORE_INDEX


@register
class SemanticSegmentation(Method):
    """Per-pixel classification: head ``"semantic"`` with ``num_classes`` logits."""

    key = "semantic"
    panoptic = True
    task = "semantic"
    Params = SemanticParams

    def heads(self, num_classes: int) -> dict[str, int]:
        return {"semantic": num_classes}

    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        logits = outputs["semantic"]
        target = batch.get("semantic")
        if target is None:
            target = (batch["instances"] > 0).long()
        weights = self.defaults.class_weights
        if weights is not None:
            if len(weights) != logits.shape[1]:
                raise LabkitError(
                    f"method 'semantic': {len(weights)} class_weights for {logits.shape[1]} classes"
                )
            weights = torch.as_tensor(weights, dtype=logits.dtype, device=logits.device)
        ce = semantic_cross_entropy(logits, target, weights, self.defaults.ignore_index)
        return {"cross_entropy": ce, "loss": ce}

    def decode(self, outputs: Outputs, **params: Any) -> list[Prediction]:
        unknown = sorted(set(params) - {"things", "min_size"})
        if unknown:
            raise LabkitError(f"method 'semantic' decodes with things=, min_size=; got {unknown}")
        probs = outputs["semantic"].float().softmax(dim=1)
        scores, classes = probs.max(dim=1)
        return [
            {"semantic": c, **class_components(c, s, params.get("things"), params.get("min_size", 1))}
            for c, s in zip(classes, scores)
        ]


def class_components(
    classes: torch.Tensor, confidence: torch.Tensor, things: Any = None, min_size: int = 1
) -> dict[str, torch.Tensor]:
    """Instances as the 8-connected components of each predicted thing class.

    ``classes`` int64 ``[H,W]`` (argmax map), ``confidence`` ``[H,W]`` (the
    winning class probability). ``things`` limits which classes form instances
    (default: every class but background). Each component's score is its mean
    confidence; components smaller than ``min_size`` pixels are dropped.
    """
    labels_np = classes.cpu().numpy()
    conf = confidence.detach().cpu()
    instances = np.zeros(labels_np.shape, dtype=np.int64)
    ids, cls, scores = [], [], []
    wanted = set(np.unique(labels_np)) - {0}
    if things is not None:
        wanted &= {int(t) for t in things}
    for c in sorted(wanted):
        components, n = ndimage.label(labels_np == c, structure=np.ones((3, 3)))
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        for k in range(1, n + 1):
            if sizes[k] < min_size:
                continue
            region = components == k
            new_id = len(ids) + 1
            instances[region] = new_id
            ids.append(new_id)
            cls.append(c)
            scores.append(float(conf[torch.from_numpy(region)].mean()))
    device = classes.device
    return {
        "instances": torch.from_numpy(instances).to(device),
        "ids": torch.tensor(ids, dtype=torch.int64, device=device),
        "classes": torch.tensor(cls, dtype=torch.int64, device=device),
        "scores": torch.tensor(scores, dtype=torch.float32, device=device),
    }
