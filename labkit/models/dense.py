"""A dense-prediction model: a backbone plus one 1x1-conv head per output map."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class DenseModel(nn.Module):
    """``forward(image [B,C,H,W]) -> {head: [B, channels, H, W]}`` at input resolution.

    The backbone returns full-resolution features ``[B, F, H, W]``; each head
    is a 1x1 convolution to its channel count. Heads named in ``normalized``
    are L2-normalised over channels (unit-sphere embeddings). Outputs are
    float32 even under autocast, so losses run in full precision.
    ``config`` holds the arguments of :func:`labkit.models.build_model`
    that rebuild this model.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: dict[str, int],
        normalized: tuple[str, ...],
        config: dict[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(
            {name: nn.Conv2d(backbone.out_channels, channels, 1) for name, channels in heads.items()}
        )
        self.normalized = tuple(normalized)
        self.config = config

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(image)
        outputs = {}
        for name, head in self.heads.items():
            out = head(features).float()
            outputs[name] = F.normalize(out, dim=1) if name in self.normalized else out
        return outputs
