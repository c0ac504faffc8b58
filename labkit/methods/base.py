"""The method contract shared by every method (see DESIGN.md, "Method contract").

A method wires a model (backbone + heads), a loss and a decoder together with
the paper's default hyperparameters.  Subclasses set ``key``, ``Params`` (a
dataclass of defaults) and implement :meth:`heads`, :meth:`loss` and
:meth:`decode`.

Model outputs are a ``dict[str, Tensor]`` of full-resolution maps
``[B, C, H, W]``, one entry per head named in :meth:`heads`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from labkit.errors import LabkitError

Batch = dict[str, torch.Tensor]
Outputs = dict[str, torch.Tensor]
Prediction = dict[str, torch.Tensor]


class Method:
    """Base class: paper defaults + model factory + loss + decoder.

    ``task`` is ``"semantic"`` for per-pixel classification and ``"instance"``
    for methods whose :meth:`decode` returns instance predictions.
    ``trainable`` is False for baselines that need no training.
    ``panoptic`` is True when every prediction also carries a ``semantic``
    map (stuff included), so panoptic quality applies.
    ``folder_params`` are defaults that replace the paper's when the method is
    trained on an image folder (a user's few real images) instead of a
    synthetic family; ``--set`` still wins over them.
    """

    key: ClassVar[str]
    task: ClassVar[str] = "instance"
    trainable: ClassVar[bool] = True
    panoptic: ClassVar[bool] = False
    folder_params: ClassVar[dict[str, Any]] = {}
    Params: ClassVar[type]

    def __init__(self, **overrides: Any) -> None:
        names = {f.name for f in dataclasses.fields(self.Params)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise LabkitError(
                f"unknown parameter(s) {unknown} for method {self.key!r}; "
                f"known: {sorted(names)}"
            )
        self.defaults = self.Params(**overrides)

    # -- model -----------------------------------------------------------
    def heads(self, num_classes: int) -> dict[str, int]:
        """Output channels of each head, by name."""
        raise NotImplementedError

    def normalized_heads(self) -> tuple[str, ...]:
        """Heads whose channel vector is L2-normalised (unit-sphere embeddings)."""
        return ()

    def build_model(
        self,
        in_channels: int,
        num_classes: int,
        backbone: str = "unet",
        **backbone_kwargs: Any,
    ) -> nn.Module:
        """A backbone with this method's heads; ``model(image)`` returns a dict of maps."""
        from labkit.models import build_model

        return build_model(
            in_channels=in_channels,
            heads=self.heads(num_classes),
            normalized=self.normalized_heads(),
            backbone=backbone,
            **backbone_kwargs,
        )

    # -- training and inference -----------------------------------------
    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        """Every loss term by name; their weighted sum under ``"loss"``."""
        raise NotImplementedError

    def decode(self, outputs: Outputs, **params: Any) -> list[Prediction]:
        """One prediction dict per image (DESIGN.md, "Data contract")."""
        raise NotImplementedError

    def loss_heads(self, batch: Batch) -> tuple[str, ...] | None:
        """The heads :meth:`loss` reads for ``batch``; training computes only those.  Default None: all.

        ``irnet`` trains its stages on different heads of one model (stage 1:
        ``cam``; stage 3: ``displacement`` and ``boundary``), each on a
        backbone of its own, so a stage need not run the other's network.
        """
        return None

    def check_training_set(self, dataset: Any) -> None:
        """Raise :class:`~labkit.errors.DataError` when this method cannot learn from ``dataset``; default: no check.

        ``irnet``: images that all carry the same image-level labels.
        """

    def training_view(self, dataset: Any) -> Any:
        """The training data as this method may see it; default: whole samples.

        A weakly supervised method returns a view without masks (``irnet``:
        image-level labels only), and ``labkit train`` then keeps no best
        epoch chosen by masks (no ``best.pt``; ``model.pt`` is the last epoch).
        """
        return dataset

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Called by :func:`labkit.train.train` before each training epoch (``epoch`` 1-based of ``epochs``,
        also after a resume); default: nothing.  ``hle``: its semantic warm-up.
        """

    def post_train(self, model: nn.Module, train_set: Any, *, out_dir: Any, train_kwargs: dict[str, Any]) -> None:
        """Training stages after the main network (a verification head, pseudo labels); default: none.

        ``labkit train`` calls it once :func:`labkit.train.train` has finished,
        with the trained ``model``, the training set, the run folder and the
        keyword arguments it passed to ``train`` (epochs, lr, device, seed...),
        so a later stage can run through the same loop into a subfolder and
        resume like every run.
        """

    def map_only(self, params: dict[str, Any]) -> dict[str, Any]:
        """Decode parameters for a caller that keeps only the ``instances`` map and drops overlapping
        ``masks`` (tiled prediction: :func:`labkit.evaluation.decode_windows`); default: ``params`` unchanged.

        ``recurrent`` then skips the extra groupings it pools into proposals.
        """
        return params

    def decode_grid(self) -> dict[str, list[Any]]:
        """Decode parameters that ``labkit tune`` sweeps, each with its candidate values.

        Keys are keyword arguments of :meth:`decode` (a bandwidth, a
        concentration, a seed threshold); ``{}`` means nothing to tune.
        """
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.defaults})"
