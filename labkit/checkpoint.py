"""Training checkpoints: one file, ``RUN_DIR/model.pt``, always written atomically.

A checkpoint is a dict saved with :func:`torch.save` holding only tensors and
plain Python values, so it loads with ``torch.load(..., weights_only=True)``:

=============  ==============================================================
``format``     ``"labkit-checkpoint"``; ``version``: 1
``method``     ``{"key": str, "params": dataclasses.asdict(method.defaults)}``
``model``      ``{"config": model.config, "state": model.state_dict()}``
``data``       ``{"class_names", "num_classes", "things", "stuff", "in_channels",
               "spec"}`` (``None`` where the training set does not say)
``epoch``      number of completed epochs
``training``   ``{"epochs", "batch_size", "lr", "weight_decay", "seed", "schedule"}``
``optimizer``  ``scheduler``, ``scaler``: their ``state_dict()``
``rng``        ``{"python", "numpy", "torch", "cuda", "loader"}`` generator states
``history``    ``{"method": key, "epochs": [one dict per epoch]}``
=============  ==============================================================

:func:`labkit.train.load_checkpoint` rebuilds the method and model from it.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit.errors import LabkitError
from labkit.io import atomic_open

CHECKPOINT_NAME = "model.pt"
FORMAT = "labkit-checkpoint"
VERSION = 1


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/model.pt`` when ``path`` is a run folder."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` via a temporary sibling file and ``os.replace``."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, **checkpoint}, f)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path`` (a file or a run folder); :class:`LabkitError` if unusable."""
    file = checkpoint_path(path)
    if not file.is_file():
        raise LabkitError(f"no checkpoint at {file}: train a model first (labkit train --out RUN_DIR)")
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, foreign or corrupt file
        raise LabkitError(f"{file} is not a readable labkit checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise LabkitError(f"{file} is not a labkit checkpoint (no format={FORMAT!r} entry)")
    if checkpoint.get("version") != VERSION:
        raise LabkitError(f"{file} has checkpoint version {checkpoint.get('version')}; expected {VERSION}")
    return checkpoint


def data_info(dataset: Any, spec: str | None = None) -> dict[str, Any]:
    """What a checkpoint records about its training data.

    Read from the dataset's attributes; a plain list of samples has none, so
    ``in_channels`` then comes from the first image and the class fields are ``None``.
    """
    in_channels = getattr(dataset, "in_channels", None)
    if in_channels is None:
        in_channels = dataset[0]["image"].shape[0]
    class_names = getattr(dataset, "class_names", None)
    num_classes = getattr(dataset, "num_classes", None if class_names is None else len(class_names))
    return {
        "class_names": None if class_names is None else [str(n) for n in class_names],
        "num_classes": None if num_classes is None else int(num_classes),
        "things": _ints(getattr(dataset, "things", None)),
        "stuff": _ints(getattr(dataset, "stuff", None)),
        "in_channels": int(in_channels),
        "spec": spec,
    }


def _ints(values: Any) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


def seed_everything(seed: int, loader_generator: torch.Generator) -> None:
    """Seed Python's, NumPy's and torch's global generators and the DataLoader's."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    loader_generator.manual_seed(seed)


def capture_rng(loader_generator: torch.Generator) -> dict[str, Any]:
    """Every random state a training run depends on, as checkpoint-safe values."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "state": {"key": numpy_state["state"]["key"].tolist(), "pos": int(numpy_state["state"]["pos"])},
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_generator.get_state(),
    }


def restore_rng(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    """Undo :func:`capture_rng`: set every generator back to the recorded state."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32), "pos": numpy_state["state"]["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    loader_generator.set_state(state["loader"].cpu())
