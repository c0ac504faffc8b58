"""A checkpoint for the explorer tests (``test_viz_explorer``, ``test_browser_bandwidth``), made without training.

An untrained small discriminative model whose semantic head calls every pixel
foreground and whose embedding spreads over a few units, so the decoder has
something to cluster and the number of instances depends on the bandwidth.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from labkit import methods
from labkit.checkpoint import save_checkpoint

SPEC = "synthetic:shapes:train"
CLASS_NAMES = ("background", "disk", "square", "triangle", "ellipse")


def write_checkpoint(run_dir: Path, in_channels: int = 3, seed: int = 0) -> Path:
    """``run_dir/model.pt`` of the model above (data spec :data:`SPEC`); returns ``run_dir``."""
    torch.manual_seed(seed)
    m = methods.get("discriminative", width=4, depth=2, embedding_dim=3, min_area=2)
    model = m.build_model(in_channels=in_channels, num_classes=len(CLASS_NAMES))
    with torch.no_grad():
        model.heads.semantic.weight.zero_()
        model.heads.semantic.bias.copy_(torch.tensor([-5.0] + [5.0] * (len(CLASS_NAMES) - 1)))
        model.heads.embedding.weight.mul_(5)
    save_checkpoint(Path(run_dir) / "model.pt", {
        "method": {"key": m.key, "params": dataclasses.asdict(m.defaults)},
        "model": {"config": model.config, "state": model.state_dict()},
        "data": {"spec": SPEC, "in_channels": in_channels, "class_names": list(CLASS_NAMES)},
    })
    return Path(run_dir)
