"""Side-by-side comparison of trained runs (and training-free methods) on one dataset.

:func:`compare` evaluates every entry on the same images with the same
metrics and measures, per image, the network's forward pass and the
method's decoding separately; :func:`write_report` renders the result as a
self-contained HTML page (plotly.js embedded once, the image grid as an
embedded PNG, the table's data as JSON), so the report opens offline.
``labkit compare RUN_DIR... --data SPEC --out DIR`` calls both and writes
``DIR/compare.json`` and ``DIR/report.html``.

An entry is a run folder (or its ``model.pt``), or the key of a method that
needs no training (``watershed``, ``components``).  A method that does not
apply to the data (its checkpoint was trained on images with another number
of channels or classes, the method asks for something the data lacks, such
as image-level labels or stuff classes) gets the status ``"not applicable"``
and the reason, never an exception: a method may say why ahead of time with
an optional ``applies_to(dataset) -> str | None`` method (None: it applies),
and a :class:`labkit.errors.LabkitError` raised while it predicts is taken as
the reason too.  Any other exception is a bug and propagates.

The table's columns (:data:`COLUMNS`): COCO mask ``ap, ap50, ap75``,
``ar50@10`` (recall of the ten best proposals at IoU 0.5), ``pq`` (panoptic
data only, else None), ``matching_accuracy`` (TP / (TP + FP + FN) at IoU
0.5), ``train_minutes`` (the seconds of every ``history.json`` in the run
folder, later training stages included), ``forward_ms`` and ``decode_ms``
(median per image, batch size 1, after one warm-up image), ``params``
(parameters of the model).
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import methods
from labkit.errors import LabkitError
from labkit.io import atomic_open, write_json
from labkit.methods.base import Method, Prediction

log = logging.getLogger(__name__)

#: every row of the table has these keys (metrics are None where they do not apply)
COLUMNS = (
    "name", "method", "run", "status", "reason",
    "ap", "ap50", "ap75", "ar50@10", "pq", "matching_accuracy",
    "train_minutes", "forward_ms", "decode_ms", "params", "n_images",
)
METRICS = ("ap", "ap50", "ap75", "ar50@10", "pq", "matching_accuracy")
OK, NOT_APPLICABLE = "ok", "not applicable"
DECODE_JSON = "decode.json"


@dataclass
class Entry:
    """One column of the comparison: a loaded method and model, or why it cannot run."""

    name: str
    method: Any
    model: nn.Module | None
    run: str | None = None
    checkpoint: dict[str, Any] | None = None
    decode_params: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    tile: int | None = None  # sliding-window tile for larger images (the run's training crop), as evaluate uses


def training_minutes(run_dir: str | Path) -> float | None:
    """Minutes of training recorded in every ``history.json`` under ``run_dir`` (later stages included)."""
    total, found = 0.0, False
    for path in sorted(Path(run_dir).rglob("history.json")):
        try:
            epochs = json.loads(path.read_text()).get("epochs", [])
        except (OSError, ValueError) as exc:
            raise LabkitError(f"{path} is not a readable history ({exc})") from exc
        total += sum(float(e.get("seconds", 0.0)) for e in epochs)
        found = True
    return total / 60 if found else None


def count_parameters(model: nn.Module | None) -> int:
    """Number of parameters of ``model`` (0 for a training-free method)."""
    return 0 if model is None else int(sum(p.numel() for p in model.parameters()))


def _data_mismatch(saved: dict[str, Any], dataset: Any) -> str | None:
    """Why a checkpoint trained on ``saved`` data cannot run on ``dataset`` (None if it can)."""
    channels = getattr(dataset, "in_channels", None)
    if saved.get("in_channels") is not None and channels is not None and saved["in_channels"] != channels:
        return f"trained on {saved['in_channels']}-channel images, the data has {channels}"
    classes = getattr(dataset, "num_classes", None)
    if saved.get("num_classes") is not None and classes is not None and saved["num_classes"] != classes:
        return f"trained with {saved['num_classes']} classes ({saved.get('spec')}), the data has {classes}"
    return None


def applicability(method: Any, dataset: Any) -> str | None:
    """The method's own reason not to apply to ``dataset`` (its optional ``applies_to``), or None."""
    hook = getattr(method, "applies_to", None)
    if hook is None:
        return None
    reason = hook(dataset)
    return None if reason is None else str(reason)


def load_entry(source: str | Path, dataset: Any, device: torch.device) -> Entry:
    """A run folder / ``model.pt`` (with its ``decode.json``), or a training-free method key."""
    from labkit.checkpoint import checkpoint_path
    from labkit.train import load_checkpoint
    from labkit.workflows import resolve_tile

    text = str(source)
    path = Path(text)
    if not path.exists() and text in methods.available():
        method = methods.get(text)
        if method.trainable:
            raise LabkitError(f"method {text!r} must be trained first: pass its run folder")
        entry = Entry(name=text, method=method, model=None)
        entry.reason = applicability(method, dataset)
        if entry.reason is None:
            entry.model = method.build_model(in_channels=dataset.in_channels, num_classes=dataset.num_classes).to(device)
        return entry
    if not path.exists():
        raise LabkitError(f"{text} is neither a run folder nor a training-free method ({', '.join(methods.available())})")
    file = checkpoint_path(path)
    run_dir = file.parent
    method, model, checkpoint = load_checkpoint(file, device=device)
    decode_file = run_dir / DECODE_JSON
    decode_params = json.loads(decode_file.read_text()) if decode_file.is_file() else {}
    if isinstance(decode_params, dict) and isinstance(decode_params.get("params"), dict):
        decode_params = decode_params["params"]  # a tune result that keeps its sweep beside the choice
    entry = Entry(name=method.key, method=method, model=model, run=str(run_dir), checkpoint=checkpoint,
                  decode_params=dict(decode_params), tile=resolve_tile(file, None))
    entry.reason = _data_mismatch(checkpoint.get("data") or {}, dataset) or applicability(method, dataset)
    return entry


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward_decode(
    method: Method, model: nn.Module, image: torch.Tensor, decode_params: dict[str, Any], device: torch.device,
    windows: Sequence[Any] | None = None,
) -> tuple[list[Prediction], float, float]:
    """``(predictions, forward ms, decode ms)`` of ``image``, CUDA-synchronised timers.

    ``image`` is a batch ``[B,C,H,W]`` on ``device``; with ``windows``, one image ``[C,H,W]`` predicted on them
    and stitched (:func:`labkit.evaluation.window_outputs`, :func:`~labkit.evaluation.decode_windows`), timed
    over all its tiles.
    """
    from labkit.evaluation import decode_windows, window_outputs

    _sync(device)
    start = time.perf_counter()
    outputs = model(image) if windows is None else window_outputs(model, image, windows, device=device)
    _sync(device)
    middle = time.perf_counter()
    if windows is None:
        decoded = method.decode(outputs, **decode_params)
    else:
        decoded = [decode_windows(method, outputs, windows, **decode_params)]
    _sync(device)
    end = time.perf_counter()
    return decoded, 1000 * (middle - start), 1000 * (end - middle)


def timed_predictions(
    method: Any, model: nn.Module, dataset: Any, *, device: torch.device, decode_params: dict[str, Any],
    progress: bool = True, max_images: int | None = None, tile: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[float], list[float]]:
    """Predictions, ground truths, and per-image forward / decode milliseconds (batch size 1).

    An image larger than ``tile`` is predicted by sliding window and stitched, as ``labkit evaluate`` predicts
    it (:func:`labkit.evaluation.predict_tiled`); its times are those of all its tiles.
    """
    from labkit.data.contract import collate, ground_truth
    from labkit.evaluation import image_windows

    n = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    predictions, truths, forward_ms, decode_ms = [], [], [], []
    model.to(device).eval()
    with torch.no_grad():
        for i in tqdm(range(n), desc=f"compare {method.key}", disable=not progress, leave=False):
            sample = dataset[i]
            windows = image_windows(sample["image"].shape[-2:], tile)
            if windows is not None:
                decoded, forward, decode = time_forward_decode(method, model, sample["image"], decode_params,
                                                               device, windows)
            else:
                decoded, forward, decode = time_forward_decode(method, model, collate([sample])["image"].to(device),
                                                               decode_params, device)
            if len(decoded) != 1:
                raise LabkitError(f"method {method.key!r} decoded {len(decoded)} predictions for one image")
            forward_ms.append(forward)
            decode_ms.append(decode)
            predictions.append({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                                for k, v in decoded[0].items()})
            truths.append(ground_truth(sample))
    return predictions, truths, forward_ms, decode_ms


def _median_after_warmup(values: Sequence[float]) -> float | None:
    values = list(values[1:]) if len(values) > 1 else list(values)
    return round(statistics.median(values), 3) if values else None


def evaluate_entry(
    entry: Entry, dataset: Any, *, device: torch.device, progress: bool = True, max_images: int | None = None,
    keep: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One table row for ``entry`` and its first ``keep`` predictions (for the image grid)."""
    from labkit.evaluation import evaluate_predictions

    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(name=entry.name, method=entry.method.key, run=entry.run, params=count_parameters(entry.model),
               train_minutes=None if entry.run is None else _round(training_minutes(entry.run)))
    if entry.reason is not None:
        row.update(status=NOT_APPLICABLE, reason=entry.reason)
        return row, []
    try:
        preds, truths, fwd, dec = timed_predictions(
            entry.method, entry.model, dataset, device=device, decode_params=entry.decode_params,
            progress=progress, max_images=max_images, tile=entry.tile,
        )
        scores = evaluate_predictions(
            preds, truths, class_names=getattr(dataset, "class_names", None),
            things=getattr(dataset, "things", None), stuff=getattr(dataset, "stuff", None), task=entry.method.task,
        )
    except LabkitError as exc:  # the method cannot run on this data (missing labels, stuff classes, ...)
        log.warning("%s does not apply to the data: %s", entry.name, exc)
        row.update(status=NOT_APPLICABLE, reason=str(exc))
        return row, []
    row.update(status=OK, n_images=len(preds), forward_ms=_median_after_warmup(fwd),
               decode_ms=_median_after_warmup(dec))
    for key in METRICS:
        value = scores.get(key)
        row[key] = None if value is None else round(float(value), 4)
    return row, preds[:keep]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _unique_names(entries: list[Entry]) -> None:
    """Two entries of one method are told apart by their run folder's name (and a number if still equal)."""
    keys = [e.name for e in entries]
    for e in entries:
        if keys.count(e.name) > 1 and e.run is not None:
            e.name = f"{e.name} ({Path(e.run).name})"
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.name] = seen.get(e.name, 0) + 1
        if seen[e.name] > 1:
            e.name = f"{e.name} #{seen[e.name]}"


def compare(
    sources: Sequence[str | Path], data: str, *, out: str | Path | None = None, device: str = "auto",
    grid_images: int = 4, max_images: int | None = None, progress: bool = True,
    keep_predictions: dict[str, Any] | None = None, skipped: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate every source on ``data`` (default split: test); write ``out/compare.json`` and ``out/report.html``.

    Returns ``{"data", "device", "columns", "rows", "grid"}``: one row per
    source (keys :data:`COLUMNS`), and ``grid`` the names of the images shown
    in the report's image grid.  A dict passed as ``keep_predictions`` receives
    the grid's ``samples``, each entry's grid ``predictions`` and the loaded
    ``entries`` (method and model by name), for a notebook's own figures.
    ``skipped`` maps the names of methods that could not even be trained on
    the data to the reason; each gets a ``"not applicable"`` row.
    """
    from labkit.data import load_dataset
    from labkit.train import resolve_device

    if not sources and not skipped:
        raise LabkitError("compare needs at least one run folder or training-free method")
    if grid_images < 0:
        raise LabkitError(f"grid_images must be >= 0, got {grid_images}")
    dev = resolve_device(device)
    dataset = load_dataset(str(data), split="test")
    if len(dataset) == 0:
        raise LabkitError(f"{data} has no images")
    entries = [load_entry(s, dataset, dev) for s in sources]
    _unique_names(entries)
    keep = min(grid_images, len(dataset))
    rows, grid_predictions = [], {}
    for entry in entries:
        row, kept = evaluate_entry(entry, dataset, device=dev, progress=progress, max_images=max_images, keep=keep)
        rows.append(row)
        if kept:
            grid_predictions[entry.name] = kept
    for name, reason in (skipped or {}).items():
        key = name.split(" ")[0]
        rows.append({c: None for c in COLUMNS} | {"name": name, "method": key, "status": NOT_APPLICABLE,
                                                   "reason": str(reason)})
    samples = [dataset[i] for i in range(keep)]
    result = {
        "data": str(data), "device": str(dev), "columns": list(COLUMNS), "rows": rows,
        "grid": [str(s.get("name", i)) for i, s in enumerate(samples)],
    }
    if keep_predictions is not None:
        keep_predictions.update(samples=samples, predictions=grid_predictions,
                                entries={e.name: e for e in entries})
    if out is not None:
        out = Path(out)
        write_json(out / "compare.json", result)
        write_report(result, out / "report.html", samples=samples, predictions=grid_predictions)
        log.info("wrote %s and %s", out / "compare.json", out / "report.html")
    return result


# -- runs for a comparison ---------------------------------------------------
def family_of(checkpoint: dict[str, Any]) -> str | None:
    """The synthetic family a checkpoint was trained on: its data spec, else (no spec) its class names.

    None for a checkpoint trained on other data (a folder, pseudo labels).
    """
    from labkit.data.synthetic import FAMILIES

    data = checkpoint.get("data") or {}
    spec = data.get("spec")
    if spec:  # trained on a synthetic family, or on other data (a folder of pseudo labels, the user's images)
        return str(spec).split(":")[1] if str(spec).startswith("synthetic:") else None
    names = data.get("class_names")
    for name, family in FAMILIES.items():
        if names is not None and list(family.class_names) == list(names) \
                and data.get("in_channels") in (None, family.in_channels):
            return name
    return None


def find_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every trained run under ``root`` (``**/model.pt``): ``{"method", "family", "run", "minutes"}``.

    A checkpoint inside another run's folder (a later training stage) is not
    a run of its own; checkpoints of methods that are not registered are skipped.
    """
    from labkit.checkpoint import CHECKPOINT_NAME, read_checkpoint

    root = Path(root)
    if not root.is_dir():
        return []
    keys = set(methods.available())
    found = []
    for file in sorted(root.rglob(CHECKPOINT_NAME)):
        run = file.parent
        if any((parent / CHECKPOINT_NAME).is_file() for parent in run.parents if root in parent.parents or parent == root):
            continue
        try:
            checkpoint = read_checkpoint(file)
        except LabkitError as exc:
            log.warning("skipping %s: %s", file, exc)
            continue
        key = checkpoint["method"]["key"]
        if key in keys:
            found.append({"method": key, "family": family_of(checkpoint), "run": str(run),
                          "minutes": training_minutes(run)})
    return found


def train_for_comparison(
    key: str, family: str, out: str | Path, *, samples: int, epochs: int, batch_size: int = 8,
    device: str = "auto", seed: int = 0, progress: bool = False, **method_params: Any,
) -> tuple[str | None, str | None]:
    """Train ``key`` on ``samples`` scenes of ``family`` into ``out`` (resumable); ``(run, reason)``.

    The same stages as ``labkit train`` (:func:`labkit.train.train_method`), with a fixed budget of ``samples`` x
    ``epochs``.  A method that does not apply to the family (its
    ``applies_to`` says so, or it raises :class:`LabkitError` while
    training) returns ``(None, reason)``.
    """
    from labkit.data.synthetic import SyntheticScenes
    from labkit.train import train_method
    from labkit.workflows import training_transform

    spec = f"synthetic:{family}"
    method = methods.get(key, **method_params)
    train_set = SyntheticScenes(family, split="train", num_samples=samples, transform=training_transform(spec, 128))
    reason = applicability(method, train_set)
    if reason is not None:
        return None, reason
    out = Path(out)
    torch.manual_seed(seed)
    try:
        model = method.build_model(in_channels=train_set.in_channels, num_classes=train_set.num_classes)
        lr = getattr(method.defaults, "lr", 1e-3)
        kwargs = dict(epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed, progress=progress,
                      data_spec=spec)
        if not _resumable(out, method, model, kwargs):  # the folder is this comparison's own: start afresh
            log.info("%s holds a run with other settings; training %s on %s afresh", out, key, family)
            shutil.rmtree(out)
        train_method(method, model, train_set, out_dir=out, **kwargs)  # every stage, as labkit train runs them
    except LabkitError as exc:
        log.warning("%s does not apply to %s: %s", key, family, exc)
        return None, str(exc)
    return str(out), None


def _resumable(out: Path, method: Any, model: nn.Module, kwargs: dict[str, Any]) -> bool:
    """True unless ``out`` holds a checkpoint of another method, parameters, model or optimiser setting."""
    import dataclasses

    from labkit.checkpoint import CHECKPOINT_NAME, read_checkpoint

    if not (out / CHECKPOINT_NAME).is_file():
        return True
    try:
        state = read_checkpoint(out)
    except LabkitError:
        return False
    return (state["method"]["key"] == method.key
            and state["method"]["params"] == dataclasses.asdict(method.defaults)
            and state["model"]["config"] == model.config
            and all(state["training"].get(k) == kwargs[k] for k in ("batch_size", "lr", "seed")))


# -- figures ----------------------------------------------------------------
def prediction_grid(samples: Sequence[dict[str, Any]], predictions: dict[str, Sequence[dict[str, Any]]],
                    cell_inches: float = 1.8):
    """A matplotlib grid: rows are images, columns the ground truth and each method's prediction."""
    import matplotlib.pyplot as plt

    from labkit.viz.overlay import blend

    columns = ["ground truth", *predictions]
    rows = max(len(samples), 1)
    fig, axes = plt.subplots(rows, len(columns), figsize=(cell_inches * len(columns), cell_inches * rows),
                             squeeze=False)
    for r, sample in enumerate(samples):
        maps = [sample["instances"], *(predictions[name][r]["instances"] for name in predictions)]
        for c, (title, instances) in enumerate(zip(columns, maps)):
            ax = axes[r][c]
            ax.imshow(blend(sample["image"], instances))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def embedding_view(method: Any, outputs: dict[str, torch.Tensor]) -> tuple[str, str, np.ndarray] | None:
    """``(head, kind, map)`` of the output that is the method's embedding, for one image (batch index 0).

    ``kind`` is ``"sphere"`` for a unit-normalised head (``recurrent``,
    ``hle``), ``"euclidean"`` for an ``embedding`` head (``discriminative``),
    ``"surface"`` for a one-channel ``label`` map (``dvis``); None when the
    method has no such output (``semantic``, ``irnet``, the baselines).
    """
    normalized = [h for h in method.normalized_heads() if h in outputs]
    if normalized:
        return normalized[0], "sphere", outputs[normalized[0]][0].detach().float().cpu().numpy()
    if "embedding" in outputs:
        return "embedding", "euclidean", outputs["embedding"][0].detach().float().cpu().numpy()
    if "label" in outputs and outputs["label"].shape[1] == 1:
        return "label", "surface", outputs["label"][0, 0].detach().float().cpu().numpy()
    return None


def embeddings_figure(entries: dict[str, Entry], sample: dict[str, Any], *, max_points: int = 1500,
                      device: str | torch.device = "cpu", seed: int = 0):
    """Each method's embedding of one image in 3D, side by side (plotly).

    Euclidean embeddings are projected by PCA, sphere embeddings by PCA and
    normalised back onto the sphere, the DVIS label map is drawn as a surface
    over the image plane; points are coloured by ground-truth instance.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from labkit.viz.embedding3d import projection_matrix
    from labkit.viz.overlay import instance_colors

    views = []
    with torch.no_grad():
        for name, entry in entries.items():
            if entry.model is None or entry.reason is not None:
                continue
            entry.model.eval()
            outputs = entry.model(sample["image"][None].to(device))
            view = embedding_view(entry.method, outputs)
            if view is not None:
                views.append((name, *view))
    if not views:
        return None
    fig = make_subplots(rows=1, cols=len(views), specs=[[{"type": "scene"}] * len(views)],
                        subplot_titles=[f"{n}<br>{h} ({k})" for n, h, k, _ in views])
    gt = sample["instances"].numpy()
    ids = np.unique(gt)
    colors = {int(i): c for i, c in zip(ids, instance_colors(ids))}
    rng = np.random.default_rng(seed)
    for col, (name, head, kind, values) in enumerate(views, start=1):
        if kind == "surface":
            fig.add_trace(go.Surface(z=values, surfacecolor=gt.astype(float), colorscale="Turbo", showscale=False,
                                     name=name), row=1, col=col)
            continue
        points = values.reshape(values.shape[0], -1).T
        labels = gt.reshape(-1)
        pick = rng.choice(len(points), size=min(max_points, len(points)), replace=False)
        points, labels = points[pick], labels[pick]
        xyz = points @ projection_matrix(points, "pca", seed=seed)  # D < 3: padded with zeros
        if kind == "sphere":
            xyz = xyz / np.maximum(np.linalg.norm(xyz, axis=1, keepdims=True), 1e-12)
        rgb = [f"rgb({int(255 * c[0])},{int(255 * c[1])},{int(255 * c[2])})" if i > 0 else "rgb(170,170,170)"
               for i in labels for c in [colors[int(i)]]]
        fig.add_trace(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", name=name,
                                   marker=dict(size=2, color=rgb), showlegend=False), row=1, col=col)
    fig.update_layout(height=460, width=min(980, max(420, 330 * len(views))), margin=dict(l=0, r=0, t=90, b=0))
    return fig


def metric_chart(rows: Sequence[dict[str, Any]]):
    """Grouped bars: the quality metrics of each method that ran."""
    import plotly.graph_objects as go

    ran = [r for r in rows if r["status"] == OK]
    fig = go.Figure([
        go.Bar(name=key, x=[r["name"] for r in ran], y=[r[key] for r in ran])
        for key in METRICS if any(r[key] is not None for r in ran)
    ])
    fig.update_layout(barmode="group", title="quality (0-1, higher is better)", yaxis_range=[0, 1],
                      width=max(480, 110 * len(ran) + 140), height=380, margin=dict(l=40, r=10, t=60, b=40))
    return fig


def speed_chart(rows: Sequence[dict[str, Any]]):
    """Stacked bars: forward and decode milliseconds per image (log scale)."""
    import plotly.graph_objects as go

    ran = [r for r in rows if r["status"] == OK]
    fig = go.Figure([
        go.Bar(name=f"{key.split('_')[0]} ms / image", x=[r["name"] for r in ran], y=[r[key] for r in ran])
        for key in ("forward_ms", "decode_ms")
    ])
    fig.update_layout(barmode="group", title="milliseconds per image (batch size 1)", yaxis_type="log",
                      width=max(420, 80 * len(ran) + 200), height=380, margin=dict(l=40, r=10, t=60, b=40))
    return fig


def _png_base64(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return html.escape(str(value))


def table_html(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison table as an HTML ``<table>`` (reasons shown for methods that did not run)."""
    shown = [c for c in COLUMNS if c not in ("method", "reason", "run")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown)
    body = []
    for r in rows:
        cells = "".join(f"<td>{_cell(r[c])}</td>" for c in shown)
        status = r["status"].replace(" ", "-")
        body.append(f'<tr class="{status}">{cells}</tr>')
        if r["status"] != OK:  # the reason on a row of its own, across the table
            body.append(f'<tr class="{status}"><td class="reason" colspan="{len(shown)}" style="text-align: left">'
                        f'{html.escape(str(r["reason"]))}</td></tr>')
    return (f'<div style="overflow-x: auto"><table id="compare-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')  # scrolls sideways where the page is narrower


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr.not-applicable td { color: #888; }
td.reason { text-align: left; font-style: italic; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
.charts > div { flex: 0 0 auto; }
"""


def write_report(
    result: dict[str, Any], path: str | Path, *, samples: Sequence[dict[str, Any]] = (),
    predictions: dict[str, Sequence[dict[str, Any]]] | None = None,
) -> Path:
    """A self-contained HTML report of :func:`compare`'s ``result``: table, charts, image grid, data."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    rows = result["rows"]
    charts = "".join(
        f"<div>{pio.to_html(fig, include_plotlyjs=False, full_html=False, config={'displaylogo': False})}</div>"
        for fig in (metric_chart(rows), speed_chart(rows))
    )
    grid = ""
    if samples:
        encoded = _png_base64(prediction_grid(samples, predictions or {}))
        grid = (f'<h2>Predictions on the same images</h2><p>Rows: images; columns: the ground truth and each '
                f'method that ran.</p><img id="prediction-grid" alt="prediction grid" '
                f'src="data:image/png;base64,{encoded}">')
    data = json.dumps(result).replace("</", "<\\/")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>labkit compare: {html.escape(result['data'])}</title>
<style>{_STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>labkit compare</h1>
<p>Data: <code>{html.escape(result['data'])}</code> (test split), device <code>{html.escape(result['device'])}</code>.
Milliseconds are medians per image at batch size 1.</p>
{table_html(rows)}
<div class="charts">{charts}</div>
{grid}
<script type="application/json" id="compare-data">{data}</script>
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        f.write(page)
    return path


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the rows for the terminal."""
    shown = ("name", "status", "ap", "ap50", "ap75", "ar50@10", "pq", "matching_accuracy", "train_minutes",
             "forward_ms", "decode_ms", "params")
    table = [list(shown)] + [[_plain(r[c]) for c in shown] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             for line in table]
    notes = [f"{r['name']}: {r['reason']}" for r in rows if r["status"] != OK]
    return "\n".join(lines + notes)


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


__all__ = [
    "COLUMNS", "Entry", "METRICS", "applicability", "compare", "count_parameters", "embedding_view",
    "embeddings_figure", "evaluate_entry", "family_of", "find_runs", "format_rows", "load_entry", "metric_chart",
    "prediction_grid", "speed_chart", "table_html", "timed_predictions", "train_for_comparison",
    "training_minutes", "write_report",
]
