"""End-to-end workflows behind ``labkit train | tune | evaluate | predict``.

The command line and the notebooks both call these, so a notebook's training
is the same code path as a user's ``labkit train`` run.

Training on an instance folder (a user's few images):

- an epoch is :data:`FOLDER_STEPS_PER_EPOCH` optimiser steps of
  ``batch_size`` random crops whatever the folder holds (two images or two
  hundred); with the methods' 40 epochs that is 800 steps of 8 crops of
  128 x 128, about the CPU time 2000 steps on 64 x 64 synthetic scenes take.
  A synthetic training split keeps :data:`STEPS_PER_EPOCH` (400 scenes at
  batch size 8: one pass per epoch, as before);
- augmentation for microscopy (1-channel: all 8 orientations) or photos
  (3-channel: left-right flips), both with intensity scale/offset jitter
  (:func:`labkit.data.transforms.augmentation`);
- validation on ``DIR/val`` (or ``DIR/../val`` next to ``DIR = .../train``)
  when it exists, else on images held out of the folder
  (:func:`labkit.data.split.validation_split`, logged and written to
  ``RUN_DIR/run.json``); each epoch the validation images are decoded and
  scored (matching accuracy at IoU 0.5, or AP50 with several classes) and
  ``RUN_DIR/best.pt`` keeps the best epoch beside ``model.pt``;
- a method's ``folder_params`` replace some of its paper defaults (``recurrent``:
  the balanced Eq. 2 without a background group and lr 2e-3; ``dvis``: the
  authors' code's pairwise term, 40 epochs; ``hle``: Eq. 13's instance pixels
  weighted 10, 45 epochs; see their docstrings);
- ``RUN_DIR/run.json`` records the crop, so ``tune``, ``evaluate`` and
  ``predict`` predict images larger than it by sliding window
  (:mod:`labkit.evaluation`) with the tiles the network was trained on.

``tune`` writes ``RUN_DIR/decode.json`` (:mod:`labkit.tuning`), which
``evaluate`` and ``predict`` use by default; ``--set`` still wins.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit import methods
from labkit.errors import DataError, LabkitError
from labkit.io import atomic_open, write_json

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10
DEFAULT_LR = 1e-3
DEFAULT_BATCH_SIZE = 8
DEFAULT_SCHEDULE = "cosine"
#: optimiser steps per epoch on synthetic data (its train split of 400 scenes at batch size 8: one pass)
STEPS_PER_EPOCH = 50
#: optimiser steps per epoch on an image folder, whatever its number of images
FOLDER_STEPS_PER_EPOCH = 20
RUN_NAME = "run.json"


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


def folder_transform(crop: int, in_channels: int, augment: str = "auto"):
    """Training augmentation for an image folder: random ``crop`` plus :func:`~labkit.data.transforms.augmentation`."""
    from labkit.data.transforms import augmentation

    return augmentation(augment, crop=crop, in_channels=in_channels)


def find_val_folder(data: str | Path) -> Path | None:
    """``DIR/val`` or, for ``DIR = .../train``, ``DIR/../val``, when it is an instance folder."""
    path = Path(data).expanduser()
    candidates = [path / "val"]
    if path.name == "train":
        candidates.append(path.parent / "val")
    return next((c for c in candidates if (c / "images").is_dir()), None)


def split_training_folder(
    data: str | Path, crop: int, augment: str = "auto", val_data: str | Path | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(train_set, val_set or None, split info)`` for an image folder.

    ``val_data``, else a ``val`` folder found by :func:`find_val_folder`, else
    images held out of ``data`` (:func:`labkit.data.split.validation_split`;
    none for fewer than 3 images).
    """
    from labkit.data import load_dataset
    from labkit.data.split import Subset, validation_split

    full = load_dataset(str(data), split="train")
    transform = folder_transform(crop, full.in_channels, augment)
    names = [full.name(i) for i in range(len(full))]
    val_path = str(val_data) if val_data else find_val_folder(data)
    if val_path is not None:
        val_set = load_dataset(str(val_path), split="val")
        log.info("validation images: the %d of %s", len(val_set), val_path)
        return Subset(full, range(len(full)), transform), val_set, {"train": names, "val_folder": str(val_path)}
    train_idx, val_idx = validation_split(names)
    if not val_idx:
        log.warning(
            "%s has %d image(s) and no val folder: nothing held out for validation, so there is no best.pt "
            "and `labkit tune` needs other annotated images (add DIR/val/images + masks)", data, len(names))
        return Subset(full, train_idx, transform), None, {"train": names, "val": []}
    val_names = [names[i] for i in val_idx]
    log.info("no val folder: validating on %d image(s) held out of %s: %s", len(val_idx), data, ", ".join(val_names))
    return Subset(full, train_idx, transform), Subset(full, val_idx), {
        "train": [names[i] for i in train_idx], "val": val_names}


def validation_metric(method: Any, val_set: Any, *, tile: int | None, device: Any, metric: str = "auto"):
    """``model -> score`` on ``val_set``: decode (by tiles beyond ``tile``) with the method's defaults."""
    from labkit.evaluation import predict_dataset
    from labkit.tuning import resolve_metric, score

    name = resolve_metric(metric, val_set, method)

    def val_metric(model: torch.nn.Module) -> float:
        predictions, truths = predict_dataset(method, model, val_set, batch_size=4, device=device,
                                              progress=False, tile=tile)
        return score(predictions, truths, name, stuff=getattr(val_set, "stuff", None))

    val_metric.metric = name  # type: ignore[attr-defined]
    return val_metric


def train_run(
    method: str, data: str | Path, out: str | Path, *, epochs: int | None = None,
    batch_size: int | None = None, lr: float | None = None, schedule: str | None = None, crop: int = 128,
    backbone: str = "unet", device: str = "auto", seed: int = 0, resume: bool = True,
    method_params: dict[str, Any] | None = None, val_data: str | Path | None = None,
    progress: bool = True, steps_per_epoch: int | str | None = "auto", augment: str = "auto",
    samples: int | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` into the run folder ``out``; return the history.

    ``epochs``, ``batch_size``, ``lr`` and ``schedule`` default to the
    method's own (its parameters of those names), else :data:`DEFAULT_EPOCHS`,
    :data:`DEFAULT_BATCH_SIZE`, :data:`DEFAULT_LR`, :data:`DEFAULT_SCHEDULE`.
    ``steps_per_epoch`` optimiser steps make an epoch (``"auto"``:
    :data:`STEPS_PER_EPOCH` on synthetic data, :data:`FOLDER_STEPS_PER_EPOCH`
    on a folder; None: one pass over the data).  ``samples``: scenes in a
    synthetic training set (None: the family's default).  Synthetic data is
    augmented as before (flips where the family allows) and validated only on
    ``val_data``; image folders as in the module docstring (``augment``:
    auto, microscopy, photo, none).
    """
    from labkit.data import load_dataset
    from labkit.train import resolve_device, train_method

    synthetic = is_synthetic(data)
    m = methods.get(method, folder=not synthetic, **(method_params or {}))
    if not m.trainable:
        raise LabkitError(f"method {method!r} needs no training; use `labkit evaluate --method {method}`")
    overridden = set(method_params or {}) | ({"epochs"} if epochs else set()) | ({"lr"} if lr else set())
    folder_defaults = [k for k in m.folder_params if k not in overridden]
    if not synthetic and folder_defaults:
        log.info("%s on an image folder: defaults %s (--set overrides them)", m.key,
                 ", ".join(f"{k}={getattr(m.defaults, k)}" for k in folder_defaults))
    if crop < 8:
        raise LabkitError(f"crop must be at least 8 pixels, got {crop}")
    if samples is not None and (not synthetic or samples < 1):
        raise LabkitError(f"samples (scenes of a synthetic training set) must be >= 1 and needs synthetic data; "
                          f"got {samples} for {data}")
    torch.manual_seed(seed)
    out = Path(out)
    if steps_per_epoch == "auto":
        steps_per_epoch = STEPS_PER_EPOCH if synthetic else FOLDER_STEPS_PER_EPOCH
    if synthetic:
        sized = {} if samples is None else {"num_samples": samples}
        train_set = load_dataset(str(data), split="train", transform=training_transform(data, crop), **sized)
        val_set = load_dataset(str(val_data), split="val") if val_data else None
        split, tile = {}, None
    else:
        train_set, val_set, split = split_training_folder(data, crop, augment, val_data)
        tile = crop
    if len(train_set) == 0:
        raise DataError(f"{data}: no training images")
    m.check_training_set(train_set)  # before run.json is written
    model = m.build_model(in_channels=train_set.in_channels, num_classes=train_set.num_classes, backbone=backbone)
    weak = m.training_view(train_set) is not train_set  # image labels only: no mask-based validation figure
    train_kwargs = dict(
        epochs=epochs or getattr(m.defaults, "epochs", DEFAULT_EPOCHS),
        batch_size=batch_size or getattr(m.defaults, "batch_size", DEFAULT_BATCH_SIZE),
        lr=lr or getattr(m.defaults, "lr", DEFAULT_LR),
        schedule=schedule or getattr(m.defaults, "schedule", DEFAULT_SCHEDULE),
        device=device, seed=seed, resume=resume, progress=progress, data_spec=str(data),
        steps_per_epoch=steps_per_epoch,
    )
    val_metric = None
    if val_set is not None and m.task == "instance" and not weak:
        val_metric = validation_metric(m, val_set, tile=tile, device=resolve_device(device))
    write_json(out / RUN_NAME, {
        "method": m.key, "data": str(data), "crop": crop, "tile": tile, "augment": None if tile is None else augment,
        "steps_per_epoch": steps_per_epoch, "batch_size": train_kwargs["batch_size"],
        "val_metric": getattr(val_metric, "metric", None), **split,
    })
    return train_method(m, model, train_set, out_dir=out, val_set=val_set, val_metric=val_metric, checked=True,
                        **train_kwargs)


def _run_dir(checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


def run_info(checkpoint: str | Path | None) -> dict[str, Any]:
    """``RUN_DIR/run.json`` of a checkpoint's run folder (``{}`` when absent or unreadable)."""
    import json

    if checkpoint is None:
        return {}
    path = _run_dir(checkpoint) / RUN_NAME
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except ValueError:
        log.warning("%s is not valid JSON; predicting without tiles", path)
        return {}
    return info if isinstance(info, dict) else {}


def resolve_tile(checkpoint: str | Path | None, tile: int | None) -> int | None:
    """``tile`` when given (0 = whole images), else the crop a folder-trained run recorded."""
    if tile is not None:
        if tile < 0:
            raise LabkitError(f"tile must be >= 0 (0 = whole images), got {tile}")
        return tile or None
    recorded = run_info(checkpoint).get("tile")
    return int(recorded) if recorded else None


def decode_settings(checkpoint: str | Path | None, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Decode parameters: ``RUN_DIR/decode.json`` (from ``labkit tune``) updated by ``overrides`` (``--set``)."""
    from labkit.tuning import read_decode_json

    tuned = read_decode_json(checkpoint) if checkpoint is not None else {}
    if tuned:
        log.info("decode parameters from %s: %s", _run_dir(checkpoint) / "decode.json", tuned)
    return {**tuned, **(overrides or {})}


def held_out_images(checkpoint: str | Path, data: str | Path) -> Any:
    """The images ``labkit train`` held out of ``data`` for validation, when ``data`` is the run's training folder.

    None when ``data`` is another dataset or nothing was held out (then a
    warning: tuning on training images flatters the decoding).
    """
    from labkit.data import load_dataset
    from labkit.data.split import Subset

    info = run_info(checkpoint)
    if is_synthetic(data) or not info.get("data") or is_synthetic(info["data"]):
        return None
    if Path(data).expanduser().resolve() != Path(info["data"]).expanduser().resolve():
        return None
    held = info.get("val") or []
    if not held:
        log.warning("tuning on %s, the run's own training images: the chosen decoding will look better "
                    "than it is on new images; pass a val folder", data)
        return None
    full = load_dataset(str(data), split="val")
    names = [full.name(i) for i in range(len(full))]
    missing = [n for n in held if n not in names]
    if missing:
        raise DataError(f"{data} no longer holds the validation images of the run: {missing[:5]}")
    log.info("tuning on the %d image(s) held out of %s for validation: %s", len(held), data, ", ".join(held))
    return Subset(full, [names.index(n) for n in held])


def tune_run(
    *, checkpoint: str | Path, data: str | Path, metric: str = "auto", device: str = "auto",
    decode_params: dict[str, Any] | None = None, tile: int | None = None, progress: bool = True,
    write: bool = True, margin: float | str = "se",
) -> dict[str, Any]:
    """Sweep the method's ``decode_grid()`` on ``data`` (default split: val); write the chosen decoding to decode.json.

    ``decode_params`` (``--set``) are held fixed and not swept; other entries
    already in ``decode.json`` (a ``dvis`` verifier...) are kept and used.
    The best setting is written unless it beats the decoding in use (decode.json,
    else the method's defaults) by ``margin`` or less (:func:`labkit.tuning.choose_point`):
    ``"se"``, one standard error of the in-use score on the validation objects
    (:func:`labkit.tuning.standard_error`), or a number (0: take the best setting).
    Returns ``{"metric", "best", "best_score", "default_score", "chosen", "chosen_score", "kept", "margin",
    "n_objects", "curve", ...}`` (``best``: the sweep's top setting; ``default_score``:
    the decoding in use before tuning; ``chosen``: what decode.json now holds of the
    grid; ``kept``: the decoding in use was kept) and writes it to ``RUN_DIR/tune.json``.
    """
    from labkit.data import load_dataset
    from labkit.train import load_checkpoint, resolve_device
    from labkit.tuning import (
        TUNE_NAME, cache_outputs, check_margin, choose_point, decode_cached, decoding_in_use, read_decode_json,
        resolve_metric, score, standard_error, sweep, write_decode_json,
    )

    check_margin(margin)
    dev = resolve_device(device)
    m, model, _ = load_checkpoint(checkpoint, device=dev)
    fixed = dict(decode_params or {})
    full_grid = m.decode_grid()
    grid = {k: v for k, v in full_grid.items() if k not in fixed}
    if not grid:
        raise LabkitError(f"method {m.key!r} has no decode parameters to tune (decode_grid() is empty"
                          f"{' once the --set ones are left out' if full_grid else ''})")
    dataset = held_out_images(checkpoint, data) or load_dataset(str(data), split="val")
    if len(dataset) == 0:
        raise DataError(f"{data}: no validation images")
    name = resolve_metric(metric, dataset, m)
    tile_size = resolve_tile(checkpoint, tile)
    saved = read_decode_json(checkpoint)
    base = {k: v for k, v in saved.items() if k not in grid}
    cached = cache_outputs(model, dataset, tile=tile_size, device=dev, batch_size=4, progress=progress)
    if any(item.truth is None for item in cached):
        raise DataError(f"{data}: tuning needs images with instance masks")
    stuff = getattr(dataset, "stuff", None)
    curve = sweep(m, cached, grid, metric=name, fixed={**base, **fixed}, progress=progress, stuff=stuff)
    in_use = decoding_in_use(m, list(grid), saved)
    before = score(decode_cached(m, cached, **{**saved, **fixed}), [c.truth for c in cached], name, stuff=stuff)
    n_objects = sum(len(c.truth["ids"]) for c in cached)
    allowed = standard_error(before, n_objects) if margin == "se" else float(margin)
    best, chosen, kept = choose_point(curve, in_use, before, allowed)
    if kept:
        log.info("tune %s: kept the decoding in use %s (%s %.3f): the best setting %s scores %.3f, within the "
                 "margin %.3f", m.key, in_use, name, before, best["params"], best["score"], allowed)
    run_dir = _run_dir(checkpoint)
    result = {
        "method": m.key, "data": str(data), "n_images": len(dataset), "n_objects": n_objects, "metric": name,
        "tile": tile_size, "fixed": {**base, **fixed}, "best": best["params"], "best_score": best["score"],
        "default_score": before, "chosen": chosen, "chosen_score": before if kept else best["score"], "kept": kept,
        "margin": allowed, "curve": curve,
    }
    if write:
        result["decode_json"] = str(write_decode_json(run_dir, {**base, **chosen, **fixed}))
        write_json(run_dir / TUNE_NAME, result)
    return result


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
    decode_params: dict[str, Any] | None = None, progress: bool = True, tile: int | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint or a training-free method on ``data`` (default split: test).

    A checkpoint's ``decode.json`` gives the decode parameters, updated by
    ``decode_params``; images larger than the run's training crop are
    predicted by sliding window (``tile``: another tile size, 0 = whole images).
    """
    from labkit.data import load_dataset
    from labkit.evaluation import evaluate
    from labkit.train import resolve_device

    dev = resolve_device(device)
    dataset = load_dataset(str(data), split="test")
    m, model = load_method_and_model(checkpoint, method, dataset, dev)
    params = decode_settings(checkpoint, decode_params)
    results = evaluate(
        m, model, dataset, device=dev, batch_size=8 if is_synthetic(data) else 1,
        progress=progress, tile=resolve_tile(checkpoint, tile), **params,
    )
    results = {"method": m.key, "data": str(data), **results}
    if params:
        results["decode_params"] = params
    if json_path:
        write_json(json_path, results)
    return results


def predict_run(
    *, source: str | Path, out: str | Path, checkpoint: str | Path | None = None,
    method: str | None = None, device: str = "auto", decode_params: dict[str, Any] | None = None,
    progress: bool = True, tile: int | None = None,
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

    Decode parameters and tiles as in :func:`evaluate_run`.
    """
    from labkit.data import load_images
    from labkit.evaluation import predict_dataset
    from labkit.train import resolve_device

    dev = resolve_device(device)
    images = load_images(str(source))
    m, model = load_method_and_model(checkpoint, method, images, dev)
    predictions, _ = predict_dataset(
        m, model, images, device=dev, batch_size=1, progress=progress, tile=resolve_tile(checkpoint, tile),
        **decode_settings(checkpoint, decode_params),
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
