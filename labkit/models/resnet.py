"""torchvision ResNet-50/101 backbones at output stride 8 with an FPN-like decoder.

The encoder is ``torchvision.models.resnetXX(replace_stride_with_dilation=
[False, True, True])``: ``layer3`` and ``layer4`` use dilated convolutions
instead of striding, so ``layer2..layer4`` all sit at 1/8 resolution (the
DeepLab setting used by the embedding papers). The decoder adds 1x1 lateral
projections of ``layer2..4`` at 1/8, upsamples and adds the ``layer1`` (1/4)
and stem (1/2) laterals, each followed by a 3x3 conv, and finally upsamples
bilinearly to the input resolution. Decoder layers use GroupNorm; the
torchvision encoder keeps its BatchNorm.

``weights=None`` (default) builds a randomly initialised encoder and never
touches the network. A torchvision weight name (``"DEFAULT"``,
``"IMAGENET1K_V2"``, ``"ResNet50_Weights.IMAGENET1K_V1"``) or enum loads
those weights through torchvision, which downloads them on first use. With
weights, inputs are standardised with the ImageNet mean/std inside the model
(the images follow labkit's 0–1 convention). When ``in_channels != 3`` the
first convolution is rebuilt; with weights its kernel is the RGB kernel summed
over colour and spread evenly over the new channels, which keeps the response
to a grey image whose channels are all equal.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from labkit.errors import UnknownKeyError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ENCODERS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}


def resolve_weights(arch: str, weights: str | WeightsEnum | None) -> WeightsEnum | None:
    """The torchvision weights enum named by ``weights`` for ``arch`` (``None`` stays ``None``)."""
    if weights is None or isinstance(weights, WeightsEnum):
        return weights
    enum = torchvision.models.get_model_weights(arch)
    name = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    try:
        return enum[name]
    except KeyError:
        choices = ", ".join(["DEFAULT", *enum.__members__])
        raise UnknownKeyError(f"unknown weights {weights!r} for {arch}; choices: {choices}") from None


def _lateral(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1)


def _refine(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.GroupNorm(math.gcd(32, channels), channels),
        nn.ReLU(inplace=True),
    )


def _upsample_to(x: torch.Tensor, like: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    size = like.shape[-2:] if isinstance(like, torch.Tensor) else like
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _adapt_conv1(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False
    )
    if pretrained:
        with torch.no_grad():
            summed = conv.weight.sum(dim=1, keepdim=True)
            new.weight.copy_(summed.repeat(1, in_channels, 1, 1) / in_channels)
    return new


class ResNetBackbone(nn.Module):
    """Dilated ResNet encoder (output stride 8) + FPN-like decoder -> ``[B, D, H, W]``."""

    def __init__(
        self,
        in_channels: int,
        arch: str = "resnet50",
        weights: str | WeightsEnum | None = None,
        decoder_channels: int = 128,
    ) -> None:
        super().__init__()
        resolved = resolve_weights(arch, weights)
        net = _ENCODERS[arch](weights=resolved, replace_stride_with_dilation=[False, True, True])
        if in_channels != 3:
            net.conv1 = _adapt_conv1(net.conv1, in_channels, pretrained=resolved is not None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])

        mean, std = self._input_statistics(in_channels, pretrained=resolved is not None)
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

        d = decoder_channels
        widths = [block[-1].conv3.out_channels for block in self.layers]  # 256, 512, 1024, 2048
        self.lateral_stride8 = nn.ModuleList(_lateral(c, d) for c in widths[1:])
        self.lateral_stride4 = _lateral(widths[0], d)
        self.lateral_stride2 = _lateral(net.conv1.out_channels, d)
        self.refine = nn.ModuleList(_refine(d) for _ in range(3))
        self.out_channels = d
        self.config = {
            "weights": None if resolved is None else f"{type(resolved).__name__}.{resolved.name}",
            "decoder_channels": d,
        }

    @staticmethod
    def _input_statistics(in_channels: int, pretrained: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not pretrained:
            return torch.zeros(in_channels), torch.ones(in_channels)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if in_channels != 3:
            mean, std = mean.mean().repeat(in_channels), std.mean().repeat(in_channels)
        return mean, std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        stride2 = self.stem(x)
        stride4 = self.layers[0](self.pool(stride2))
        c2 = self.layers[1](stride4)
        c3 = self.layers[2](c2)
        c4 = self.layers[3](c3)
        p8 = sum(lat(c) for lat, c in zip(self.lateral_stride8, (c2, c3, c4)))
        p8 = self.refine[0](p8)
        p4 = self.refine[1](_upsample_to(p8, stride4) + self.lateral_stride4(stride4))
        p2 = self.refine[2](_upsample_to(p4, stride2) + self.lateral_stride2(stride2))
        return _upsample_to(p2, image.shape[-2:])
