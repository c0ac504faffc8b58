"""A dense-prediction model: a backbone plus one 1x1-conv head per output map."""
from __future__ import annotations

from typing import Any, Collection

import torch
import torch.nn.functional as F
from torch import nn


class DenseModel(nn.Module):
    """``forward(image [B,C,H,W]) -> {head: [B, channels, H, W]}`` at input resolution.

    The backbone returns full-resolution features ``[B, F, H, W]``; each head
    is a 1x1 convolution to its channel count. Heads named in ``normalized``
    are L2-normalised over channels (unit-sphere embeddings). Outputs are
    float32 even under autocast, so losses run in full precision.
    Heads in ``separate`` each read the features of a backbone of their own
    (in ``own_backbones``) instead of the shared one: two networks in one
    module, e.g. a semantic segmentation network beside an embedding network.
    An optional ``readout`` module adds outputs computed from the heads'
    outputs (``forward(outputs) -> dict``).
    ``config`` holds the arguments of :func:`labkit.models.build_model`
    that rebuild this model.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: dict[str, int],
        normalized: tuple[str, ...],
        config: dict[str, Any],
        own_backbones: dict[str, nn.Module] | None = None,
        readout: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.own_backbones = nn.ModuleDict(own_backbones or {})
        self.heads = nn.ModuleDict({
            name: nn.Conv2d(self._features_of(name).out_channels, channels, 1) for name, channels in heads.items()
        })
        self.normalized = tuple(normalized)
        self.config = config
        if readout is not None:  # extra outputs computed from the heads' (HLE's class means)
            self.readout = readout

    def _features_of(self, head: str) -> nn.Module:
        return self.own_backbones[head] if head in self.own_backbones else self.backbone

    def forward(self, image: torch.Tensor, heads: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Every head's output, or only those in ``heads`` (then no readout).

        A backbone that none of the wanted heads reads is not run.
        """
        wanted = self.heads if heads is None else {name: self.heads[name] for name in heads}
        shared = self.backbone(image) if any(name not in self.own_backbones for name in wanted) else None
        outputs = {}
        for name, head in wanted.items():
            net = self._features_of(name)
            features = shared if net is self.backbone else net(image)
            out = _full_resolution(head(features).float(), net, image.shape[-2:])
            outputs[name] = F.normalize(out, dim=1) if name in self.normalized else out
        if heads is None and hasattr(self, "readout"):
            outputs.update(self.readout(outputs))
        return outputs


def _full_resolution(out: torch.Tensor, backbone: nn.Module, size: tuple[int, int]) -> torch.Tensor:
    """A head's output upsampled from its backbone's ``output_stride`` (bilinear) and cropped to ``size``."""
    stride = getattr(backbone, "output_stride", 1)
    if stride == 1:
        return out
    up = F.interpolate(out, size=(out.shape[-2] * stride, out.shape[-1] * stride), mode="bilinear",
                       align_corners=False)
    return up[..., : size[0], : size[1]]
