"""The one training loop every method uses, with exact resume and a NaN stop.

``train(method, model, train_set, out_dir=RUN_DIR)`` optimises
``method.loss(model(batch["image"]), batch)["loss"]`` with Adam and a
per-step learning-rate schedule (default ``"cosine"``: from ``lr`` down to 0
over all steps; ``"onecycle"``: up from ``lr / 25`` to ``lr`` over the first
30 % of the steps, then the cosine down to 0, the one-cycle shape of Smith &
Topin 2019 and torch's ``OneCycleLR``; ``"poly"``: ``lr * (1 - t/T)**0.9``;
``"constant"``).
Mixed precision (``torch.autocast`` + ``GradScaler``) runs on CUDA only.

An epoch is one pass over the training set by default; with
``steps_per_epoch`` it is that many optimiser steps whatever the size of the
set (the samples of an epoch are consecutive random permutations of the set,
cut to ``steps_per_epoch * batch_size``), so two images and two hundred train
for as long; with random crops every step still sees new views.

After every epoch it writes ``RUN_DIR/model.pt`` (see :mod:`labkit.checkpoint`
for the layout) and ``RUN_DIR/history.json``, both atomically.  Given a
validation set and ``val_metric`` (a figure of the model on the validation
images, higher is better, e.g. the matching accuracy of their decoded
instances; the validation loss says little about decoded instances), it
also keeps ``RUN_DIR/best.pt``, the model of the epoch with the best figure
(ties keep the earlier epoch).  ``best.pt`` has the layout of ``model.pt``
without the optimiser states, so :func:`load_checkpoint` reads either. Calling
``train`` again on the same folder resumes from the last completed epoch
with model, optimiser, scheduler, scaler and every random generator restored,
so on CPU an interrupted run finishes bit-for-bit like an uninterrupted one.
A fresh run seeds Python's, NumPy's and torch's global generators with
``seed`` (the model is built by the caller, before ``train``; seed torch
before building it, as :func:`labkit.workflows.train_run` does).

A seed repeats a run bit-for-bit on the same machine with the same number of
torch threads.  Another thread count (or CPU) sums floats in another order;
training amplifies those last-bit differences like a change of seed, so each
epoch record notes ``threads`` (``torch.get_num_threads()``).

A NaN or infinite loss term stops training with
:class:`~labkit.errors.NonFiniteLossError` naming the epoch, step and term;
the checkpoint of the last completed epoch stays as it was.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from labkit import checkpoint as ckpt
from labkit.data.contract import collate
from labkit.errors import DataError, LabkitError, NonFiniteLossError
from labkit.io import write_json
from labkit.methods.base import Method

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "onecycle", "poly", "constant")
#: ``"onecycle"``: the share of the steps spent warming up, and the starting fraction of ``lr``
WARMUP_SHARE, WARMUP_START = 0.3, 1 / 25
HISTORY_NAME = "history.json"
BEST_NAME = "best.pt"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``; ``"cuda"`` / ``"cuda:N"``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LabkitError(f"device {device!r} asked for, but no CUDA GPU is available; use 'cpu' or 'auto'")
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise LabkitError(f"invalid device {device!r}; choices: auto, cpu, cuda, cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LabkitError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise LabkitError(f"unknown device {device!r}; choices: auto, cpu, cuda, cuda:N")


def lr_factor(step: int, total: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` of ``total``."""
    progress = min(step / max(total, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        if progress < WARMUP_SHARE:
            rise = 0.5 * (1.0 - math.cos(math.pi * progress / WARMUP_SHARE))
            return WARMUP_START + (1.0 - WARMUP_START) * rise
        return 0.5 * (1.0 + math.cos(math.pi * (progress - WARMUP_SHARE) / (1.0 - WARMUP_SHARE)))
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    return 1.0


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Method, nn.Module, dict[str, Any]]:
    """``(method, model, checkpoint)`` from ``RUN_DIR/model.pt`` (or ``RUN_DIR``).

    The method comes from ``labkit.methods.get(key, **params)``, the model from
    ``build_model(**config)`` (pretrained weights are not fetched again: the
    saved state replaces them) in ``eval()`` mode on ``device``.
    """
    from labkit import methods
    from labkit.models import build_model

    dev = resolve_device(device)
    checkpoint = ckpt.read_checkpoint(path, map_location=dev)
    method = methods.get(checkpoint["method"]["key"], **checkpoint["method"]["params"])
    config = dict(checkpoint["model"]["config"])
    if "weights" in config:
        config["weights"] = None
    model = build_model(**config)
    model.load_state_dict(checkpoint["model"]["state"])
    return method, model.to(dev).eval(), checkpoint


def train(
    method: Method,
    model: nn.Module,
    train_set: Any,
    *,
    out_dir: str | Path,
    epochs: int = 10,
    batch_size: int = 4,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    val_set: Any = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    num_workers: int = 0,
    resume: bool = True,
    amp: bool | str = "auto",
    progress: bool = True,
    data_spec: str | None = None,
    log_every: int = 50,
    steps_per_epoch: int | None = None,
    val_metric: Callable[[nn.Module], float] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``method`` on ``train_set``; return the history.

    The history is ``{"method": key, "epochs": [record, ...]}``, one record
    per epoch: ``epoch``, the epoch mean (over samples) of every loss term by
    name, ``val_<term>`` for each term when ``val_set`` is given, ``lr`` (of
    the epoch's last step) and ``seconds``. It is also saved as
    ``out_dir/history.json`` and inside the checkpoint. ``model`` is trained
    in place and left on ``device``.

    ``steps_per_epoch``: optimiser steps per epoch (None: one pass over
    ``train_set``).  ``val_metric``: called with the model (in eval mode, on
    ``device``) after each epoch when ``val_set`` is given; its value is
    recorded as ``val_score`` and picks ``best.pt`` (higher is better).
    """
    _check_arguments(epochs, batch_size, schedule, model)
    if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or int(steps_per_epoch) < 1):
        raise LabkitError(f"steps_per_epoch must be a positive integer or None, got {steps_per_epoch!r}")
    _check_dataset(train_set, "training set")
    if val_set is not None:
        _check_dataset(val_set, "validation set")
    dev = resolve_device(device)
    use_amp = _resolve_amp(amp, dev)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ckpt.CHECKPOINT_NAME

    data = ckpt.data_info(train_set, data_spec)
    if data["in_channels"] != model.config["in_channels"]:
        raise DataError(
            f"the training images have {data['in_channels']} channel(s) but the model "
            f"expects {model.config['in_channels']}"
        )
    settings = {"batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed, "schedule": schedule}
    if steps_per_epoch is not None:  # absent from older checkpoints, which mean one pass per epoch
        settings["steps_per_epoch"] = int(steps_per_epoch)

    model.to(dev)
    loader_generator = torch.Generator()
    loader = _loader(train_set, batch_size, dev, num_workers, shuffle=True, generator=loader_generator,
                     num_samples=None if steps_per_epoch is None else int(steps_per_epoch) * batch_size)
    val_loader = None if val_set is None else _loader(val_set, batch_size, dev, num_workers, shuffle=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, total=epochs * len(loader), schedule=schedule)
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp)

    history: dict[str, Any] = {"method": method.key, "epochs": []}
    if resume and path.exists():
        state = ckpt.read_checkpoint(path, map_location=dev)
        _check_same_run(state, method, model, settings, path)
        history = _restore(state, model, optimizer, scheduler, scaler, loader_generator)
        if state["training"]["epochs"] != epochs:
            log.warning("resuming a %d-epoch run as a %d-epoch run: the lr schedule is stretched from here",
                        state["training"]["epochs"], epochs)
        log.info("resuming %s from %s after epoch %d of %d", method.key, path, state["epoch"], epochs)
    else:
        if path.exists():
            log.warning("resume=False: starting afresh, %s will be overwritten", path)
        ckpt.seed_everything(seed, loader_generator)

    first = len(history["epochs"]) + 1
    if first > epochs:
        log.info("%s already holds %d epoch(s); nothing to train", path, first - 1)
    with _channels_last(model), tqdm(range(first, epochs + 1), desc=f"train {method.key}", disable=not progress,
                                     initial=first - 1, total=epochs, unit="epoch") as epoch_bar:
        for epoch in epoch_bar:
            started = time.perf_counter()
            method.begin_epoch(epoch, epochs)
            with tqdm(loader, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False,
                      unit="batch") as bar:
                terms, last_lr = _train_epoch(method, model, bar, optimizer, scheduler, scaler, dev, use_amp,
                                              epoch, log_every)
            record: dict[str, Any] = {"epoch": epoch, **terms}
            if val_loader is not None:
                val = _mean_terms(method, model, val_loader, dev, use_amp, epoch)
                record.update({f"val_{name}": value for name, value in val.items()})
                if val_metric is not None:
                    record["val_score"] = _val_score(val_metric, model)
                    model.train()
            record.update(lr=last_lr, seconds=time.perf_counter() - started, threads=torch.get_num_threads())
            improved = "val_score" in record and _is_best(record, history["epochs"])
            history["epochs"].append(record)
            common = {
                "method": {"key": method.key, "params": dataclasses.asdict(method.defaults)},
                "model": {"config": model.config, "state": model.state_dict()},
                "data": data,
                "epoch": epoch,
                "training": {"epochs": epochs, **settings},
            }
            if improved:  # before model.pt: a crash in between leaves model.pt one epoch behind, never best.pt
                ckpt.save_checkpoint(out_dir / BEST_NAME, {**common, "history": history})
                log.info("%s epoch %d: best so far (val_score %.4g), saved %s", method.key, epoch,
                         record["val_score"], out_dir / BEST_NAME)
            ckpt.save_checkpoint(path, {
                **common,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": ckpt.capture_rng(loader_generator),
                "history": history,
            })
            write_json(out_dir / HISTORY_NAME, history)
            summary = _format_terms({k: v for k, v in record.items() if k not in ("epoch", "lr", "seconds", "threads")})
            epoch_bar.set_postfix_str(summary)
            log.info("%s epoch %d/%d: %s (%.1f s)", method.key, epoch, epochs, summary, record["seconds"])
    return history


@contextlib.contextmanager
def _channels_last(model: nn.Module) -> Iterator[None]:
    """Train in NHWC memory format (oneDNN runs those convolutions faster on a CPU).

    The model is handed back contiguous, also when training raises, because
    the two formats differ at the 1e-5 level and a checkpoint loads contiguous.
    """
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def train_method(
    method: Method, model: nn.Module, train_set: Any, *, out_dir: str | Path, val_set: Any = None,
    val_metric: Callable[[nn.Module], float] | None = None, checked: bool = False, **train_kwargs: Any,
) -> dict[str, Any]:
    """Every training stage of ``method``, as ``labkit train`` runs them; returns the network's history.

    :func:`train` fits the network on the method's view of the data, once
    ``method.check_training_set`` accepts it (``method.training_view``: IRNet
    sees image labels only, with its validation set seen the same way), then
    ``method.post_train`` runs the method's later stages (DVIS's verification head, IRNet's relation mining,
    IRNet and pseudo labels) on the full training set.  ``train_kwargs`` go
    to :func:`train` and are passed on to the later stages (the validation
    set and metric are the network's only).  ``checked``: the caller has run
    ``method.check_training_set`` on ``train_set`` already (its warnings are not repeated).
    """
    if not checked:
        method.check_training_set(train_set)
    seen = method.training_view(train_set)
    if val_set is not None and seen is not train_set:
        val_set = method.training_view(val_set)
    history = train(method, model, seen, out_dir=out_dir, val_set=val_set, val_metric=val_metric, **train_kwargs)
    method.post_train(model, train_set, out_dir=out_dir, train_kwargs=train_kwargs)
    return history


def _is_best(record: dict[str, Any], previous: list[dict[str, Any]]) -> bool:
    """Whether ``record``'s ``val_score`` beats every earlier epoch's (ties keep the earlier one)."""
    value = record["val_score"]
    if not math.isfinite(value):
        return False
    earlier = [r["val_score"] for r in previous if "val_score" in r and math.isfinite(r["val_score"])]
    return not earlier or value > max(earlier)


def _val_score(val_metric: Callable[[nn.Module], float], model: nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        value = float(val_metric(model))
    if not math.isfinite(value):
        log.warning("val_metric returned %r; this epoch cannot be the best", value)
    return value


def _restore(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
    loader_generator: torch.Generator,
) -> dict[str, Any]:
    """Load every training state from checkpoint ``state``; return its history."""
    model.load_state_dict(state["model"]["state"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # empty when saved without mixed precision
        scaler.load_state_dict(state["scaler"])
    ckpt.restore_rng(state["rng"], loader_generator)
    return state["history"]


def _forward(method: Method, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's outputs for ``batch``: only the heads the method's loss reads, where it names them."""
    heads = method.loss_heads(batch)
    return model(batch["image"]) if heads is None else model(batch["image"], heads=heads)


def _train_epoch(
    method: Method, model: nn.Module, bar: tqdm, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
    device: torch.device, use_amp: bool, epoch: int, log_every: int,
) -> tuple[dict[str, float], float]:
    """One pass over the batches of ``bar``; the per-sample mean of each term and the last step's lr."""
    model.train()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    last_lr = optimizer.param_groups[0]["lr"]
    for step, batch in enumerate(bar, 1):
        batch = _to_device(batch, device)
        with torch.autocast(device.type, enabled=use_amp):
            outputs = _forward(method, model, batch)
        terms = method.loss(outputs, batch)
        values = _finite_values(terms, method, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        last_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        n = batch["image"].shape[0]
        count += n
        for name, value in values.items():
            sums[name] += value * n
        means = {name: total / count for name, total in sums.items()}
        bar.set_postfix_str(_format_terms(means), refresh=False)
        if log_every and step % log_every == 0:
            log.info("epoch %d step %d: %s", epoch, step, _format_terms(means))
    return {name: total / count for name, total in sums.items()}, last_lr


@torch.no_grad()
def _mean_terms(
    method: Method, model: nn.Module, loader: DataLoader, device: torch.device, use_amp: bool, epoch: int
) -> dict[str, float]:
    """Per-sample mean of every loss term over ``loader`` with the model in eval mode."""
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for step, batch in enumerate(loader, 1):
        batch = _to_device(batch, device)
        with torch.autocast(device.type, enabled=use_amp):
            outputs = _forward(method, model, batch)
        values = _finite_values(method.loss(outputs, batch), method, epoch, step, where="validation ")
        n = batch["image"].shape[0]
        count += n
        for name, value in values.items():
            sums[name] += value * n
    return {name: total / count for name, total in sums.items()}


def _finite_values(
    terms: dict[str, torch.Tensor], method: Method, epoch: int, step: int, where: str = ""
) -> dict[str, float]:
    """Loss terms as floats; :class:`NonFiniteLossError` naming the first NaN/inf term."""
    if "loss" not in terms:
        raise LabkitError(f"method {method.key!r}: loss() must return the total under 'loss', got {sorted(terms)}")
    values = {name: float(value.detach()) for name, value in terms.items()}
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        name = next((b for b in bad if b != "loss"), "loss")
        raise NonFiniteLossError(
            f"{method.key}: non-finite {where}loss at epoch {epoch}, step {step}: "
            f"term {name!r} = {values[name]}; training stopped and nothing of this epoch "
            "was saved: the checkpoint of the last completed epoch, if any, is unchanged (try a lower lr)"
        )
    return values


def _format_terms(values: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in values.items())


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and Python in a DataLoader worker from its torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _loader(
    dataset: Any, batch_size: int, device: torch.device, num_workers: int, shuffle: bool,
    generator: torch.Generator | None = None, num_samples: int | None = None,
) -> DataLoader:
    """Batches of ``dataset``; with ``num_samples``, that many samples per pass (consecutive permutations).

    ``RandomSampler(num_samples=len(dataset))`` draws exactly what
    ``shuffle=True`` draws from ``generator``, so a fixed number of steps that
    equals one pass reproduces the one-pass epochs.
    """
    if num_samples is not None:
        sampler = RandomSampler(dataset, num_samples=num_samples, generator=generator)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers,
            generator=generator, worker_init_fn=_seed_worker if num_workers else None,
            pin_memory=device.type == "cuda",
        )
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, num_workers=num_workers,
        generator=generator, worker_init_fn=_seed_worker if num_workers else None,
        pin_memory=device.type == "cuda",
    )


def _check_arguments(epochs: int, batch_size: int, schedule: str, model: nn.Module) -> None:
    if epochs < 1:
        raise LabkitError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise LabkitError(f"batch_size must be >= 1, got {batch_size}")
    if schedule not in SCHEDULES:
        raise LabkitError(f"unknown schedule {schedule!r}; choices: {', '.join(SCHEDULES)}")
    if not isinstance(getattr(model, "config", None), dict):
        raise LabkitError("train() needs a model from labkit.models.build_model (it has a .config to rebuild it)")


def _check_dataset(dataset: Any, what: str) -> None:
    if len(dataset) == 0:
        raise DataError(f"the {what} is empty (0 samples)")


def _resolve_amp(amp: bool | str, device: torch.device) -> bool:
    if amp == "auto":
        return device.type == "cuda"
    if not isinstance(amp, bool):
        raise LabkitError(f"amp must be 'auto', True or False, got {amp!r}")
    if amp and device.type != "cuda":
        log.warning("mixed precision needs CUDA; training on %s in float32", device)
        return False
    return amp


def _check_same_run(
    state: dict[str, Any], method: Method, model: nn.Module, settings: dict[str, Any], path: Path
) -> None:
    """Refuse to resume a checkpoint of another method, model or optimiser setting.

    A method parameter the checkpoint lacks (added to labkit after it was
    written) counts as at its default, so a run resumes across such upgrades.
    """
    saved_params = state["method"]["params"]
    if state["method"]["key"] == method.key:
        saved_params = dataclasses.asdict(type(method.defaults)()) | saved_params
    saved = {
        "method": state["method"]["key"],
        "method parameters": saved_params,
        "model": state["model"]["config"],
        **{name: state["training"].get(name) for name in settings},
    }
    current = {
        "method": method.key,
        "method parameters": dataclasses.asdict(method.defaults),
        "model": model.config,
        **settings,
    }
    differ = [name for name in saved if saved[name] != current[name]]
    if differ:
        details = "; ".join(f"{name}: checkpoint {saved[name]!r}, now {current[name]!r}" for name in differ)
        raise LabkitError(
            f"{path} is from a different run ({details}); pass resume=False to overwrite it "
            "or choose another out_dir"
        )
