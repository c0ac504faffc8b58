"""The sample contract (DESIGN.md, "Data contract"): checks, collation, ground truth.

A sample is a dict with ``image`` float32 ``[C,H,W]``, ``instances`` int64
``[H,W]`` (0 = background), optionally ``semantic`` int64 ``[H,W]`` (255 =
ignore), ``labels`` float ``[K]`` (multi-hot image-level labels, K =
``num_classes`` including background at index 0) and ``name`` (str).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from labkit.errors import DataError

IGNORE_INDEX = 255

Sample = dict[str, Any]


def check_sample(sample: Sample, where: str = "sample") -> Sample:
    """Raise :class:`DataError` naming ``where`` if ``sample`` breaks the contract."""
    image, inst = sample.get("image"), sample.get("instances")
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise DataError(f"{where}: 'image' must be a [C,H,W] tensor, got {_describe(image)}")
    if image.dtype != torch.float32:
        raise DataError(f"{where}: 'image' must be float32, got {image.dtype}")
    if not torch.isfinite(image).all():
        raise DataError(f"{where}: 'image' contains NaN or infinite values")
    if not isinstance(inst, torch.Tensor) or inst.ndim != 2 or inst.dtype != torch.int64:
        raise DataError(f"{where}: 'instances' must be an int64 [H,W] tensor, got {_describe(inst)}")
    if tuple(inst.shape) != tuple(image.shape[1:]):
        raise DataError(
            f"{where}: image size {tuple(image.shape[1:])} does not match "
            f"instance mask size {tuple(inst.shape)}"
        )
    if (inst < 0).any():
        raise DataError(f"{where}: 'instances' has negative ids")
    sem = sample.get("semantic")
    if sem is not None and (sem.dtype != torch.int64 or tuple(sem.shape) != tuple(inst.shape)):
        raise DataError(f"{where}: 'semantic' must be int64 {tuple(inst.shape)}, got {_describe(sem)}")
    return sample


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def collate(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack samples of equal size into a batch; ``name`` becomes a list of str."""
    if not samples:
        raise DataError("cannot collate an empty list of samples")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise DataError(
                    f"cannot batch {key!r} of different shapes {sorted(shapes)}; "
                    "use a crop transform or batch_size=1"
                )
            batch[key] = torch.stack(values)
        else:
            batch[key] = list(values)
    return batch


def ground_truth(sample: Sample) -> dict[str, torch.Tensor]:
    """The ground truth of one sample in prediction form (``instances``, ``ids``, ``classes``).

    A ground-truth instance's class is the majority ``semantic`` value under it,
    ignoring 255; class 1 when the sample has no semantic map.
    """
    inst = sample["instances"]
    ids = torch.unique(inst)
    ids = ids[ids > 0]
    sem = sample.get("semantic")
    classes = torch.ones(len(ids), dtype=torch.int64)
    if sem is not None:
        for k, i in enumerate(ids.tolist()):
            under = sem[(inst == i) & (sem != IGNORE_INDEX)]
            if under.numel():
                classes[k] = torch.mode(under).values
    gt = {"instances": inst, "ids": ids, "classes": classes}
    if sem is not None:
        gt["semantic"] = sem
    return gt
