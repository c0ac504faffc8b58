"""End-to-end workflows behind ``labkit train | evaluate | predict``.

The command line and the notebooks both call these, so a notebook's training
is the same code path as a user's ``labkit train`` run.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit import methods
from labkit.errors import LabkitError
from labkit.io import atomic_open, write_json

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10
DEFAULT_LR = 1e-3


def is_synthetic(spec: str | Path) -> bool:
    return str(spec).startswith("synthetic:")


def training_transform(spec: str | Path, crop: int):
    """Augmentation for training: random crops for image folders, flips unless the data has a handedness.

    Synthetic scenes share one size; a user's images do not, so they are
    cropped (and padded where smaller) to ``crop`` x ``crop`` to form batches.
    Flips are skipped for a synthetic family that is not mirror-symmetric
    (``digits``: a mirrored digit is not a digit of the test scenes).
    """
    from labkit.data.registry import parse_synthetic
    from labkit.data.synthetic import get_family
    from labkit.data.transforms import Compose, RandomCrop, RandomFlip

    if is_synthetic(spec):
        family = get_family(parse_synthetic(str(spec))[0])
        return Compose([RandomFlip()] if family.mirror_symmetric else [])
    return Compose([RandomCrop(crop), RandomFlip()])


def train_run(
    method: str, data: str | Path, out: str | Path, *, epochs: int | None = None,
    batch_size: int = 8, lr: float | None = None, crop: int = 128, backbone: str = "unet",
    device: str = "auto", seed: int = 0, resume: bool = True,
    method_params: dict[str, Any] | None = None, val_data: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` into the run folder ``out``; return the history."""
    from labkit.data import load_dataset
    from labkit.train import train

    m = methods.get(method, **(method_params or {}))
    if not m.trainable:
        raise LabkitError(f"method {method!r} needs no training; use `labkit evaluate --method {method}`")
    torch.manual_seed(seed)
    train_set = load_dataset(str(data), split="train", transform=training_transform(data, crop))
    val_set = load_dataset(str(val_data), split="val") if val_data else None
    model = m.build_model(in_channels=train_set.in_channels, num_classes=train_set.num_classes, backbone=backbone)
    train_kwargs = dict(
        epochs=epochs or getattr(m.defaults, "epochs", DEFAULT_EPOCHS),
        batch_size=batch_size, lr=lr or getattr(m.defaults, "lr", DEFAULT_LR),
        device=device, seed=seed, resume=resume, progress=progress, data_spec=str(data),
    )
    history = train(m, model, train_set, out_dir=Path(out), val_set=val_set, **train_kwargs)
    m.post_train(model, train_set, out_dir=Path(out), train_kwargs=train_kwargs)
    return history


def load_method_and_model(
    checkpoint: str | Path | None, method: str | None, dataset: Any, device: torch.device,
):
    """A trained (checkpoint) or training-free (method key) method with its model."""
    from labkit.train import load_checkpoint

    if checkpoint is not None:
        m, model, _ = load_checkpoint(checkpoint, device=device)
        return m, model
    m = methods.get(method)
    if m.trainable:
        raise LabkitError(f"method {method!r} must be trained first: pass --checkpoint RUN_DIR/model.pt")
    model = m.build_model(in_channels=dataset.in_channels, num_classes=dataset.num_classes)
    return m, model.to(device)


def evaluate_run(
    *, data: str | Path, checkpoint: str | Path | None = None, method: str | None = None,
    json_path: str | Path | None = None, device: str = "auto",
    decode_params: dict[str, Any] | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint or a training-free method on ``data`` (default split: test)."""
    from labkit.data import load_dataset
    from labkit.evaluation import evaluate
    from labkit.train import resolve_device

    dev = resolve_device(device)
    dataset = load_dataset(str(data), split="test")
    m, model = load_method_and_model(checkpoint, method, dataset, dev)
    results = evaluate(
        m, model, dataset, device=dev, batch_size=8 if is_synthetic(data) else 1,
        progress=progress, **(decode_params or {}),
    )
    results = {"method": m.key, "data": str(data), **results}
    if json_path:
        write_json(json_path, results)
    return results


def predict_run(
    *, source: str | Path, out: str | Path, checkpoint: str | Path | None = None,
    method: str | None = None, device: str = "auto", decode_params: dict[str, Any] | None = None,
    progress: bool = True,
) -> int:
    """Write ``out/NAME.png`` (16-bit instance ids) and ``out/predictions.json``; return the count.

    ``predictions.json`` lists, per image, the ``ids``, ``classes`` and
    ``scores`` of the instances in the PNG.  A method that also proposes
    overlapping masks (``recurrent``'s pooled proposals) gets every proposal
    in ``out/NAME.proposals.npz`` (``masks`` bool ``[N,H,W]``, ``ids``,
    ``classes``, ``scores``) and their count under ``proposals``.  A method
    whose predictions carry a ``semantic`` map (panoptic ``hle``, ``semantic``)
    also gets ``out/NAME.semantic.png`` (16-bit class per pixel, 0 =
    background/unlabelled), named under ``semantic`` in ``predictions.json``.
    """
    from labkit.data import load_images
    from labkit.evaluation import predict_dataset
    from labkit.train import resolve_device

    dev = resolve_device(device)
    images = load_images(str(source))
    m, model = load_method_and_model(checkpoint, method, images, dev)
    predictions, _ = predict_dataset(
        m, model, images, device=dev, batch_size=1, progress=progress, **(decode_params or {})
    )
    out = Path(out)
    index = {}
    for i, pred in enumerate(predictions):
        name = images.name(i)
        save_instance_png(out / f"{name}.png", pred["instances"])
        in_map = torch.isin(pred["ids"], pred["instances"].unique())
        index[name] = {key: pred[key][in_map].tolist() for key in ("ids", "classes", "scores")}
        if pred.get("semantic") is not None:  # panoptic methods (hle): the class of every pixel too
            save_instance_png(out / f"{name}.semantic.png", pred["semantic"])
            index[name]["semantic"] = f"{name}.semantic.png"
        if pred.get("masks") is not None:
            with atomic_open(out / f"{name}.proposals.npz", "wb") as f:
                np.savez_compressed(f, **{key: pred[key].numpy() for key in ("masks", "ids", "classes", "scores")})
            index[name]["proposals"] = len(pred["ids"])
    write_json(out / "predictions.json", {"method": m.key, "images": index})
    return len(predictions)


def save_instance_png(path: Path, instances: torch.Tensor | np.ndarray) -> None:
    """Save an instance map as a 16-bit PNG (0 = background), atomically."""
    from PIL import Image

    arr = np.asarray(torch.as_tensor(instances).cpu(), dtype=np.int64)
    if arr.max(initial=0) > np.iinfo(np.uint16).max:
        raise LabkitError(f"{path.name}: more than 65535 instances cannot be stored in a 16-bit PNG")
    with atomic_open(path, "wb") as f:
        Image.fromarray(arr.astype(np.uint16)).save(f, format="PNG")
