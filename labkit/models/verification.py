"""DVIS verification head (Sec. 4, "Classification and Verification").

For every candidate instance of the discretised label map: RoIAlign
(:func:`torchvision.ops.roi_align`) of the backbone features over the
candidate's box, concatenated with the candidate's mask over the same box,
then a small convolutional network with two outputs: class logits
(background + the data's classes; cross-entropy) and the IoU of the candidate
with its best-matching ground-truth instance (sigmoid; Huber regression, the
IoU head of the paper's [19]).

Input channels per candidate: the ``F`` feature channels, the binary mask
(the paper) and the soft mask ``clamp(1 - |f - v|, 0)`` of the label map
``f`` around the candidate's mean value ``v`` (the authors' code), all
sampled at ``size x size`` (paper/authors: 14).

Deviations, chosen for CPU scale: the paper's network has 7 layers and the
authors' an FC of 1024; ours has ``convs`` 3x3 convolutions of ``width``
channels (the last one of stride 2) and an FC of ``hidden`` units.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from labkit.errors import LabkitError


class VerificationHead(nn.Module):
    """``forward(features [B,F,H,W], label_map [B,H,W], masks [N,H,W], boxes [N,4], image_index [N], values [N])``.

    Returns ``{"class_logits": [N, num_classes], "iou": [N]}`` (``iou`` in [0, 1]).
    ``config`` rebuilds the head: ``VerificationHead(**head.config)``.
    """

    def __init__(
        self, feature_channels: int, num_classes: int, *, size: int = 14, convs: int = 3, width: int = 32,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        for name, value, low in (("feature_channels", feature_channels, 1), ("num_classes", num_classes, 2),
                                 ("size", size, 2), ("convs", convs, 1), ("width", width, 1), ("hidden", hidden, 1)):
            if int(value) < low:
                raise LabkitError(f"verification head: {name} must be >= {low}, got {value}")
        self.config = {"feature_channels": int(feature_channels), "num_classes": int(num_classes), "size": int(size),
                       "convs": int(convs), "width": int(width), "hidden": int(hidden)}
        layers: list[nn.Module] = []
        channels = int(feature_channels) + 2
        for i in range(int(convs)):
            stride = 2 if i == int(convs) - 1 else 1
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1), nn.ReLU(inplace=True)]
            channels = width
        self.convs = nn.Sequential(*layers)
        out = (int(size) + 1) // 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(width * out * out, hidden), nn.ReLU(inplace=True))
        self.classify = nn.Linear(hidden, int(num_classes))
        self.iou = nn.Linear(hidden, 1)
        self.size = int(size)

    def roi_inputs(
        self, features: Tensor, label_map: Tensor, masks: Tensor, boxes: Tensor, image_index: Tensor, values: Tensor
    ) -> Tensor:
        """``[N, F + 2, size, size]``: RoIAligned features, binary mask and soft mask of each candidate."""
        if features.dim() != 4 or label_map.dim() != 3:
            raise LabkitError("verification head: features must be [B,F,H,W] and the label map [B,H,W]")
        if masks.shape[-2:] != features.shape[-2:] or label_map.shape[-2:] != features.shape[-2:]:
            raise LabkitError(
                f"verification head: masks {tuple(masks.shape)} and label map {tuple(label_map.shape)} must share "
                f"the feature map's size {tuple(features.shape[-2:])}"
            )
        rois = torch.cat([image_index.to(features.dtype)[:, None], boxes.to(features.dtype)], dim=1)
        pooled = roi_align(features, rois, self.size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        # the two mask planes, one candidate at a time on the crop of its box (no [N,2,H,W] stack of full images)
        planes = []
        for k in range(masks.shape[0]):
            x1, y1, x2, y2 = (int(v) for v in boxes[k].round().tolist())
            x1, y1 = max(x1, 0), max(y1, 0)
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            crop_f = label_map[int(image_index[k]), y1:y2, x1:x2]
            soft = (1 - (crop_f - values[k].to(crop_f.dtype)).abs()).clamp(min=0)
            plane = torch.stack([masks[k, y1:y2, x1:x2].to(features.dtype), soft.to(features.dtype)])
            h, w = plane.shape[-2:]
            box = torch.tensor([[0.0, 0.0, 0.0, float(w), float(h)]], dtype=features.dtype, device=features.device)
            planes.append(roi_align(plane[None], box, self.size, spatial_scale=1.0, sampling_ratio=2, aligned=True))
        mask_pooled = torch.cat(planes)
        return torch.cat([pooled, mask_pooled], dim=1)

    def forward(
        self, features: Tensor, label_map: Tensor, masks: Tensor, boxes: Tensor, image_index: Tensor, values: Tensor
    ) -> dict[str, Tensor]:
        if masks.shape[0] == 0:
            k = self.classify.out_features
            return {"class_logits": features.new_zeros(0, k), "iou": features.new_zeros(0)}
        return self.from_rois(self.roi_inputs(features, label_map, masks, boxes, image_index, values))

    def from_rois(self, rois: Tensor) -> dict[str, Tensor]:
        """The two outputs from :meth:`roi_inputs`' ``[N, F + 2, size, size]``."""
        x = self.fc(self.convs(rois))
        return {"class_logits": self.classify(x), "iou": torch.sigmoid(self.iou(x))[:, 0]}


#: orientations a training candidate's RoI may be given (:func:`random_orientations`)
ORIENTATIONS = ("dihedral", "flip", "none")


def random_orientations(rois: Tensor, kind: str, generator: torch.Generator | None = None) -> Tensor:
    """Each RoI ``[N, C, S, S]`` under a random symmetry: ``"dihedral"`` (the 8 of the square), ``"flip"``
    (left-right or not) or ``"none"``."""
    if kind not in ORIENTATIONS:
        raise LabkitError(f"unknown RoI orientations {kind!r}; choices: {', '.join(ORIENTATIONS)}")
    if kind == "none" or rois.shape[0] == 0:
        return rois
    n = rois.shape[0]
    flip = torch.randint(0, 2, (n,), generator=generator).bool().to(rois.device)
    out = torch.where(flip[:, None, None, None], rois.flip(-1), rois)
    if kind == "dihedral":
        turns = torch.randint(0, 4, (n,), generator=generator).to(rois.device)
        out = torch.stack([torch.rot90(out[i], int(turns[i]), dims=(-2, -1)) for i in range(n)])
    return out


def verification_scores(
    outputs: dict[str, Tensor], class_weight: float = 0.5
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(score, class, class confidence, predicted IoU)`` per candidate.

    The class is the most probable *foreground* class (1..K-1), its
    confidence that probability, and the score
    ``class_weight * confidence + (1 - class_weight) * IoU`` (Sec. 4: "the
    weighted sum of predicted confidences on the semantic classification and
    the predicted IoU").
    """
    if not 0 <= class_weight <= 1:
        raise LabkitError(f"class_weight must be in [0, 1], got {class_weight}")
    probs = F.softmax(outputs["class_logits"].float(), dim=1)
    conf, cls = probs[:, 1:].max(dim=1)
    iou = outputs["iou"].float()
    return class_weight * conf + (1 - class_weight) * iou, cls + 1, conf, iou


def head_from_config(config: dict[str, Any]) -> VerificationHead:
    """A :class:`VerificationHead` from its ``config``."""
    return VerificationHead(**config)
