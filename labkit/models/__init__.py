"""Models: a backbone (small UNet or dilated ResNet) with named output heads.

``build_model(in_channels, heads, normalized, backbone, **kw)`` is the one
factory; :meth:`labkit.methods.Method.build_model` calls it with the method's
heads. ``model(image)`` returns ``{head: [B, channels, H, W]}`` at input
resolution and ``model.config`` rebuilds the model:
``build_model(**model.config)``.

Backbones and their keyword arguments:

- ``"unet"``: ``width=16, depth=3, coords=False, coord_scale=64, decoder=True`` (:class:`~labkit.models.unet.UNet`,
  GroupNorm, CPU-sized; ``coords`` appends pixel-coordinate input channels; ``decoder=False``: the encoder
  alone, whose stride-``2**depth`` maps the heads read and whose head outputs are upsampled).
- ``"resnet50"``, ``"resnet101"``: ``weights=None, decoder_channels=128``
  (:class:`~labkit.models.resnet.ResNetBackbone`, output stride 8, GPU-sized).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from torch import nn

from labkit.errors import LabkitError, UnknownKeyError
from labkit.models.dense import DenseModel
from labkit.models.resnet import ResNetBackbone
from labkit.models.unet import UNet

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "resnet50": functools.partial(ResNetBackbone, arch="resnet50"),
    "resnet101": functools.partial(ResNetBackbone, arch="resnet101"),
}


def available_backbones() -> list[str]:
    """The backbone names :func:`build_model` accepts."""
    return sorted(BACKBONES)


def build_model(
    in_channels: int,
    heads: dict[str, int],
    normalized: tuple[str, ...] | list[str] = (),
    backbone: str = "unet",
    separate: tuple[str, ...] | list[str] = (),
    readout: dict[str, Any] | None = None,
    separate_kw: dict[str, dict[str, Any]] | None = None,
    **kw: Any,
) -> DenseModel:
    """A backbone with one 1x1-conv head per entry of ``heads`` (name -> channels).

    Heads in ``normalized`` output unit vectors (L2 over channels). Heads in
    ``separate`` get a backbone of their own (same kind and arguments), so
    their training does not compete with the other heads for features;
    ``separate_kw[head]`` replaces some of ``kw`` for that head's backbone
    (IRNet: an encoder-only CAM network beside a UNet). ``kw``
    goes to the backbone (see the module docstring). ``readout`` (a config of
    :func:`labkit.models.class_means.build_readout`) adds outputs computed from
    the heads' outputs by a module with parameters of its own (HLE's class
    means). Raises
    :class:`UnknownKeyError` for an unknown backbone and :class:`LabkitError`
    for bad heads or backbone arguments.
    """
    if backbone not in BACKBONES:
        raise UnknownKeyError(
            f"unknown backbone {backbone!r}; choices: {', '.join(available_backbones())}"
        )
    _check_heads(heads, normalized)
    missing = sorted(set(separate) - set(heads))
    if missing:
        raise LabkitError(f"separate heads {missing} are not among the heads {sorted(heads)}")
    if int(in_channels) < 1:
        raise LabkitError(f"in_channels must be >= 1, got {in_channels}")
    separate_kw = {name: dict(options) for name, options in (separate_kw or {}).items()}
    stray = sorted(set(separate_kw) - set(separate))
    if stray:
        raise LabkitError(f"separate_kw names heads {stray} that have no backbone of their own (separate)")
    factory = BACKBONES[backbone]
    known = set(inspect.signature(factory).parameters) - {"in_channels", "arch"}
    unknown = sorted(set(kw).union(*separate_kw.values()) - known)
    if unknown:
        raise LabkitError(
            f"unknown argument(s) {unknown} for backbone {backbone!r}; known: {sorted(known)}"
        )
    net = factory(int(in_channels), **kw)
    own = {name: factory(int(in_channels), **{**kw, **separate_kw.get(name, {})}) for name in separate}
    config = {
        "in_channels": int(in_channels),
        "heads": {name: int(c) for name, c in heads.items()},
        "normalized": tuple(normalized),
        "backbone": backbone,
        **({"separate": tuple(separate)} if separate else {}),
        **({"separate_kw": separate_kw} if separate_kw else {}),
        **net.config,
    }
    post = None
    if readout is not None:
        from labkit.models.class_means import build_readout

        post = build_readout(readout)
        config["readout"] = post.config
    return DenseModel(net, config["heads"], config["normalized"], config, own, readout=post)


def _check_heads(heads: dict[str, int], normalized: tuple[str, ...] | list[str]) -> None:
    if not heads:
        raise LabkitError("a model needs at least one head, got heads={}")
    for name, channels in heads.items():
        if not isinstance(name, str) or not name or "." in name:
            raise LabkitError(f"head names must be non-empty strings without '.', got {name!r}")
        if int(channels) < 1:
            raise LabkitError(f"head {name!r} needs >= 1 channel, got {channels}")
    missing = sorted(set(normalized) - set(heads))
    if missing:
        raise LabkitError(f"normalized heads {missing} are not among the heads {sorted(heads)}")


__all__ = ["BACKBONES", "DenseModel", "ResNetBackbone", "UNet", "available_backbones", "build_model"]
