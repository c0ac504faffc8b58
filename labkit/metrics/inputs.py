"""Reading predictions and ground truths into numpy, and the mask overlaps every metric uses.

A prediction or ground truth (DESIGN.md, "Data contract") is a dict with
``instances`` int ``[H,W]`` (0 = none) and aligned 1-D ``ids``, ``classes``,
``scores``; ``semantic`` ``[H,W]`` where the data or method has one.  Values
may be numpy arrays or torch tensors (any device).  Lenient defaults keep
hand-written ground truths short: missing ``ids`` are the ids in the map,
missing ``scores`` are 1, and missing ``classes`` are the majority ``semantic``
value under each instance (ignoring 255, as :func:`labkit.data.contract.ground_truth`
does; ties go to the smaller class) where the entry has a ``semantic`` map, 1
otherwise (class-agnostic data).

A prediction may also carry ``masks``, a boolean ``[N,H,W]`` stack aligned with
``ids``, for proposals that overlap (pooled from several bandwidths, as the
recurrent-embedding paper does for its recall curves).  Where present the
ranking metrics (:mod:`~labkit.metrics.coco`, :mod:`~labkit.metrics.voc`,
:mod:`~labkit.metrics.recall`) use it instead of the map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from labkit.errors import DataError

IGNORE_INDEX = 255
LOOKUP_LIMIT = 1 << 22  # ids below this are relabelled through a lookup table


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array or (CPU/GPU, grad or not) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass(frozen=True)
class Entry:
    """One image's prediction or ground truth, as numpy.

    ``index`` maps every pixel to the position of its segment plus one
    (0 = no segment), so that ``ids[index - 1]`` is the pixel's id.
    """

    index: np.ndarray  # int64 [H,W]
    ids: np.ndarray  # int64 [N]
    classes: np.ndarray  # int64 [N]
    scores: np.ndarray  # float64 [N]
    masks: np.ndarray | None  # bool [N,H,W], overlapping proposals, or None
    semantic: np.ndarray | None  # int64 [H,W] or None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.index.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.ids)


def read_entry(item: Mapping[str, Any] | Entry, where: str) -> Entry:
    """Validate one prediction/ground-truth dict; ``where`` names it in errors.

    An :class:`Entry` (already read) is returned as it is, so a caller scoring
    the same data with several metrics reads it once.
    """
    if isinstance(item, Entry):
        return item
    if "instances" not in item:
        raise DataError(f"{where}: no 'instances' map (keys: {sorted(item)})")
    inst = to_numpy(item["instances"])
    if inst.ndim != 2:
        raise DataError(f"{where}: 'instances' must be [H,W], got shape {inst.shape}")
    inst = inst.astype(np.int64, copy=False)
    if "ids" in item:
        ids = to_numpy(item["ids"]).astype(np.int64).reshape(-1)
    else:
        ids = present_ids(inst)
    n = len(ids)
    if n > 1 and (np.diff(np.sort(ids)) == 0).any():
        raise DataError(f"{where}: 'ids' has duplicates: {ids.tolist()}")
    scores = _aligned(item, "scores", n, where, np.float64)
    index = index_map(inst, ids, where)
    masks = None
    if item.get("masks") is not None:
        masks = to_numpy(item["masks"]).astype(bool)
        if masks.shape != (n, *inst.shape):
            raise DataError(
                f"{where}: 'masks' must be [N,H,W] = {(n, *inst.shape)}, got {masks.shape}"
            )
    semantic = None
    if item.get("semantic") is not None:
        semantic = to_numpy(item["semantic"]).astype(np.int64)
        if semantic.shape != inst.shape:
            raise DataError(
                f"{where}: 'semantic' shape {semantic.shape} differs from 'instances' {inst.shape}"
            )
        if semantic.size and semantic.min() < 0:
            raise DataError(f"{where}: 'semantic' has negative classes {_some(semantic[semantic < 0])}")
    if item.get("classes") is None and semantic is not None:
        classes = classes_under(index, n, semantic)
    else:
        classes = _aligned(item, "classes", n, where, np.int64)
    return Entry(index, ids, classes, scores, masks, semantic)


def classes_under(index: np.ndarray, n: int, semantic: np.ndarray) -> np.ndarray:
    """Each segment's class: the majority ``semantic`` value under it, ignoring 255.

    ``index`` is an :class:`Entry` index map (segment position plus one, 0 =
    none) with ``n`` segments.  Ties go to the smaller class; a segment whose
    pixels are all ignore (255) gets class 1, as class-agnostic data does.
    """
    classes = np.ones(n, dtype=np.int64)
    keep = (index > 0) & (semantic != IGNORE_INDEX)
    if n == 0 or not keep.any():
        return classes
    seg, sem = index[keep] - 1, semantic[keep]
    width = int(sem.max()) + 1
    counts = np.bincount(seg * width + sem, minlength=n * width).reshape(n, width)
    seen = counts.sum(1) > 0
    classes[seen] = counts[seen].argmax(1)  # argmax takes the first (smallest) class on ties
    return classes


def _aligned(item: Mapping[str, Any], key: str, n: int, where: str, dtype: type) -> np.ndarray:
    if item.get(key) is None:
        return np.ones(n, dtype=dtype)
    values = to_numpy(item[key]).astype(dtype).reshape(-1)
    if len(values) != n:
        raise DataError(f"{where}: {len(values)} {key} for {n} ids")
    return values


def index_map(instances: np.ndarray, ids: np.ndarray, where: str = "map") -> np.ndarray:
    """Replace each id by its position in ``ids`` plus one (0 stays 0).

    Raises :class:`DataError` if the map holds a negative id or a positive id
    missing from ``ids``, or ``ids`` holds an id <= 0.
    """
    if instances.size and instances.min() < 0:
        raise DataError(f"{where}: map has negative ids {_some(instances[instances < 0])}")
    if (ids <= 0).any():
        raise DataError(f"{where}: 'ids' must be positive, got {ids.tolist()}")
    top = max(int(instances.max(initial=0)), int(ids.max(initial=0)))
    if len(ids) == 0:
        index = np.zeros(instances.shape, dtype=np.int64)
    elif top < LOOKUP_LIMIT:  # one gather through a lookup table
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, len(ids) + 1)
        index = lut[instances]
    else:  # huge ids: binary search in the sorted ids
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, instances), len(ids) - 1)
        index = np.where(sorted_ids[pos] == instances, order[pos] + 1, 0)
    stray = (index == 0) & (instances > 0)
    if stray.any():
        raise DataError(
            f"{where}: map has ids {_some(instances[stray])} not listed in 'ids' {ids.tolist()}"
        )
    return index


def present_ids(instances: np.ndarray) -> np.ndarray:
    """The positive ids in a map, sorted."""
    top = int(instances.max(initial=0))
    if top < LOOKUP_LIMIT and instances.min(initial=0) >= 0:
        return np.flatnonzero(np.bincount(instances.reshape(-1), minlength=top + 1)[1:]) + 1
    ids = np.unique(instances)
    return ids[ids > 0]


def _some(values: np.ndarray) -> list[int]:
    return np.unique(values)[:5].tolist()


def read_pairs(
    predictions: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]]
) -> list[tuple[Entry, Entry]]:
    """Validated (prediction, ground truth) pairs, one per image."""
    if len(predictions) != len(ground_truths):
        raise DataError(
            f"{len(predictions)} predictions for {len(ground_truths)} ground truths"
        )
    pairs = []
    for i, (p, g) in enumerate(zip(predictions, ground_truths)):
        pred = read_entry(p, f"prediction {i}")
        gt = read_entry(g, f"ground truth {i}")
        if pred.shape != gt.shape:
            raise DataError(f"image {i}: prediction size {pred.shape} != ground truth size {gt.shape}")
        pairs.append((pred, gt))
    return pairs


def contingency(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> np.ndarray:
    """Pixel counts ``[na+1, nb+1]`` of each (a, b) index pair; index 0 = no segment."""
    joint = a.reshape(-1) * (nb + 1) + b.reshape(-1)
    return np.bincount(joint, minlength=(na + 1) * (nb + 1)).reshape(na + 1, nb + 1)


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0, without warnings."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def overlaps(pred: Entry, gt: Entry) -> np.ndarray:
    """IoU ``[N_pred, N_gt]`` between predicted segments (or ``masks``) and ground truths.

    From one ``bincount`` of (pred, gt) index pairs when the prediction is a
    map, a matrix product when it is a stack of overlapping masks.
    """
    n, m = len(pred), len(gt)
    if pred.masks is None:
        table = contingency(pred.index, gt.index, n, m)
        inter = table[1:, 1:]
        pred_area, gt_area = table[1:].sum(1), table[:, 1:].sum(0)
    else:
        flat = pred.masks.reshape(n, -1).astype(np.float64)
        onehot = np.zeros((flat.shape[1], m + 1))
        onehot[np.arange(flat.shape[1]), gt.index.reshape(-1)] = 1
        inter = (flat @ onehot[:, 1:]).round().astype(np.int64)
        pred_area = pred.masks.reshape(n, -1).sum(1)
        gt_area = np.bincount(gt.index.reshape(-1), minlength=m + 1)[1:]
    union = pred_area[:, None] + gt_area[None, :] - inter
    return safe_divide(inter, union)


def ranked(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties keep their listed order."""
    return np.argsort(-scores, kind="mergesort")
