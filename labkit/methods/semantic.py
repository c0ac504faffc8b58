"""``semantic``: per-pixel classification with cross entropy (the reference method).

Not one of the five embedding papers: it is the plain baseline every notebook
starts from and the method the training loop is tested with. One head,
``"semantic"``, predicts ``num_classes`` logits per pixel (background is class 0).

Targets are ``batch["semantic"]``; class-agnostic data without a semantic map
trains foreground (``instances > 0``, class 1) against background. Pixels
labelled ``ignore_index`` (255) add nothing to the loss or its gradient.

:meth:`SemanticSegmentation.decode` returns, per image, the argmax class map
under ``"semantic"`` and no instances (an all-zero ``instances`` map and empty
``ids``, ``classes``, ``scores``), as the prediction contract asks of
semantic-task methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

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


@dataclass
class SemanticParams:
    """``class_weights``: one weight per class (``None``: all 1); ``ignore_index``: unlabelled pixels."""

    class_weights: tuple[float, ...] | None = None
    ignore_index: int = IGNORE_INDEX


@register
class SemanticSegmentation(Method):
    """Per-pixel classification: head ``"semantic"`` with ``num_classes`` logits."""

    key = "semantic"
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
        if params:
            raise LabkitError(f"method 'semantic' takes no decode parameters, got {sorted(params)}")
        classes = outputs["semantic"].argmax(dim=1)
        device = classes.device
        return [
            {
                "semantic": semantic,
                "instances": torch.zeros_like(semantic),
                "ids": torch.zeros(0, dtype=torch.int64, device=device),
                "classes": torch.zeros(0, dtype=torch.int64, device=device),
                "scores": torch.zeros(0, dtype=torch.float32, device=device),
            }
            for semantic in classes
        ]
