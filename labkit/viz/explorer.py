"""The live explorer on a trained model: pick an image, move the decode sliders, save ``decode.json``.

:class:`ModelExplorer` loads a checkpoint (:func:`labkit.train.load_checkpoint`),
runs the model once per chosen image and keeps its outputs; every move of a
control re-decodes those outputs with the method's own decoder
(``method.decode``), so what the sliders show is exactly what ``labkit
evaluate`` and ``labkit predict`` will produce with the same parameters.  It
shows the instance overlay, the model's embedding of the image in 3D (the
decoded instances' pixels, projected as in :mod:`labkit.viz.embedding3d`),
the instance count and, where the image has a ground truth, ARI, matching
accuracy and AP50 (:func:`labkit.clustering.score_instances`).  **Save**
writes the current parameters with :func:`labkit.tuning.write_decode_json`,
the same file ``labkit tune`` writes, which ``evaluate``/``predict`` then read.

The controls come from ``method.decode_grid()``: numbers get a slider over the
range of the candidates (initial value: ``decode.json`` when the run folder
has one, else the method's default, else the middle candidate), anything else
a drop-down of the candidates.  Images larger than ``tile`` are run and
decoded by sliding window, as ``labkit evaluate`` and ``predict`` do for a run
trained on crops.  Callbacks only call ``method.decode`` (through
:func:`labkit.evaluation.decode_windows`),
:func:`labkit.clustering.score_instances`, :func:`overlay_png`,
:func:`embedding_figure` and :func:`labkit.tuning.write_decode_json`, each
tested on its own.
"""
from __future__ import annotations

import html
import logging
import math
import numbers
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from IPython.display import display

from labkit.errors import DataError, LabkitError
from labkit.viz.bandwidth import METRIC_STYLE, overlay_png
from labkit.viz.embedding3d import embedding_scatter3d

log = logging.getLogger(__name__)

SLIDER_STEPS = 100  # a float slider moves in about this many steps over the candidates' range


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _plain(value: Any) -> Any:
    """A JSON-friendly Python value (numpy scalars -> int/float, tuples -> lists)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def check_grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """``grid`` as ``{name: [candidates]}``; :class:`LabkitError` for an empty or malformed entry."""
    if not isinstance(grid, Mapping):
        raise LabkitError(f"a decode grid must map parameter names to candidate lists, got {type(grid).__name__}")
    out: dict[str, list[Any]] = {}
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise LabkitError(f"decode grid entry {name!r} must be a non-empty list of candidates, got {values!r}")
        out[str(name)] = list(values)
    return out


def initial_decode_params(
    method: Any, grid: Mapping[str, Sequence[Any]], saved: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Starting value of each grid parameter: the decoding in use (:func:`labkit.tuning.decoding_in_use`:
    ``saved`` decode.json, else the method's default, else the property resolving a ``None`` default),
    else the middle candidate (a default that is no number, for a numeric grid, counts as none)."""
    from labkit.tuning import decoding_in_use

    grid, saved = check_grid(grid), dict(saved or {})
    in_use = decoding_in_use(method, list(grid), saved)
    params: dict[str, Any] = {}
    for name, values in grid.items():
        value = in_use[name]
        numeric = all(_is_number(v) for v in values)
        if name in saved or (value is not None and (not numeric or _is_number(value))):
            params[name] = value
        else:
            params[name] = sorted(values, key=float)[len(values) // 2] if numeric else values[len(values) // 2]
    return params


def decode_control(name: str, values: Sequence[Any], value: Any) -> widgets.ValueWidget:
    """The widget for one grid parameter.

    All-integer candidates: an ``IntSlider``; numbers: a ``FloatSlider``
    over ``[min, max]`` (widened to include ``value``) in about
    :data:`SLIDER_STEPS` steps; anything else (booleans, strings, tuples):
    a ``Dropdown`` of the candidates (plus ``value`` when it is not one).
    """
    values = list(values)
    style = {"description_width": "initial"}
    if values and all(_is_number(v) for v in values) and _is_number(value):
        low, high = min(min(values), value), max(max(values), value)
        if all(isinstance(v, numbers.Integral) for v in values) and isinstance(value, numbers.Integral):
            return widgets.IntSlider(value=int(value), min=int(low), max=int(high), step=1, description=name,
                                     continuous_update=False, style=style)
        step = _nice_step((float(high) - float(low)) / SLIDER_STEPS) if high > low else 0.01
        decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
        return widgets.FloatSlider(value=float(value), min=float(low), max=float(high), step=step, description=name,
                                   continuous_update=False, readout_format=f".{decimals}f", style=style)
    options = list(values) if any(_same(value, v) for v in values) else [value, *values]
    dropdown = widgets.Dropdown(options=[(str(v), v) for v in options], description=name, style=style)
    dropdown.value = next(v for v in options if _same(value, v))
    return dropdown


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (_is_number(a) and _is_number(b) and float(a) == float(b))


def _nice_step(raw: float) -> float:
    """The largest of 1, 2, 5 x 10^k not above ``raw``."""
    exponent = math.floor(math.log10(raw))
    for mantissa in (5, 2, 1):
        if mantissa * 10**exponent <= raw:
            return float(f"{mantissa}e{exponent}")
    return 10.0**exponent


def embedding_figure(
    embedding: Any, instances: Any, *, max_points: int = 3000, sphere: bool = False, seed: int = 0,
    title: str | None = None,
) -> go.Figure:
    """The embedding ``[D,H,W]`` of the pixels of ``instances`` (``[H,W]``, 0 = none) in 3D, one colour per instance.

    Pixels outside every instance are left out (their embedding is
    unconstrained by the losses and would hide the clusters).  ``sphere``
    draws the unit sphere (unit-norm embeddings).
    """
    emb = torch.as_tensor(np.asarray(embedding) if not isinstance(embedding, torch.Tensor) else embedding)
    inst = torch.as_tensor(np.asarray(instances) if not isinstance(instances, torch.Tensor) else instances)
    if emb.ndim != 3 or inst.shape != emb.shape[1:]:
        raise DataError(f"embedding_figure: expected an embedding [D,H,W] and instances [H,W], "
                        f"got {tuple(emb.shape)} and {tuple(inst.shape)}")
    inside = inst > 0
    points = emb.detach().float().cpu().reshape(emb.shape[0], -1).t()[inside.reshape(-1).cpu()]
    fig = embedding_scatter3d(points, inst.cpu()[inside], max_points=max_points, sphere=sphere, seed=seed)
    fig.update_layout(height=420, title=dict(text=title or "", font=dict(size=12)))
    return fig


def paste_windows(
    maps: torch.Tensor, windows: Sequence[tuple[int, int, int, int]], size: tuple[int, int]
) -> torch.Tensor:
    """One ``[C,H,W]`` map of ``size`` from per-window maps ``[n, C, h, w]`` (later windows overwrite overlaps).

    For showing a tiled embedding; the decoder itself stitches predictions
    (:func:`labkit.evaluation.stitch_tiles`), not maps.
    """
    if len(windows) != len(maps):
        raise DataError(f"paste_windows: {len(maps)} maps for {len(windows)} windows")
    out = maps.new_zeros((maps.shape[1], *size))
    for m, (y, x, h, w) in zip(maps, windows):
        out[:, y:y + h, x:x + w] = m[:, :h, :w]
    return out


def open_images(images: Any, split: str = "val") -> Any:
    """A dataset of images to explore: a dataset object, a list of samples, or a spec.

    A spec (``synthetic:NAME[:SPLIT]`` or a folder) opens with
    :func:`labkit.data.load_dataset` (``split``, default ``val``) so the
    ground truth comes along; a folder of bare images (no masks) with
    :func:`labkit.data.load_images`.
    """
    from labkit.data import load_dataset, load_images

    if isinstance(images, (str, Path)):
        try:
            dataset = load_dataset(str(images), split=split)
        except DataError:
            dataset = load_images(str(images))
    else:
        dataset = images
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise LabkitError(f"images must be a dataset, a list of samples or a path/spec, got {type(images).__name__}")
    if len(dataset) == 0:
        raise LabkitError("the explorer needs at least one image; the dataset is empty")
    return dataset


def training_images(spec: str | None) -> str:
    """Where to explore a model trained on ``spec``: its validation images.

    The ``val`` split of a synthetic family; for a folder, the ``val`` folder
    ``labkit train`` validated on (``DIR/val``, or ``../val`` beside
    ``DIR = .../train``; :func:`labkit.workflows.find_val_folder`), else the
    folder itself.
    """
    from labkit.data.registry import SYNTHETIC_PREFIX, parse_synthetic
    from labkit.workflows import find_val_folder

    if not spec:
        raise LabkitError("the checkpoint does not record its training data; pass images=DIR or synthetic:NAME:val")
    if str(spec).startswith(SYNTHETIC_PREFIX):
        return f"{SYNTHETIC_PREFIX}{parse_synthetic(str(spec))[0]}:val"
    return str(find_val_folder(spec) or spec)


def _name(dataset: Any, index: int) -> str:
    try:
        return str(dataset.name(index))
    except Exception:  # a list of samples, or a dataset without names
        return f"image {index}"


class ModelExplorer:
    """Re-decode a trained model's output on one image live, and save the chosen decode parameters.

    Args:
        checkpoint: ``RUN_DIR/model.pt`` or ``RUN_DIR``.
        images: a dataset, a list of samples (``image [C,H,W]``, optional
            ``instances``) or a spec for :func:`open_images`; default: the
            checkpoint's training data (:func:`training_images`).
        run_dir: where Save writes ``decode.json`` (default: the checkpoint's folder).
        index: the image shown first.
        device: where the model runs (``"auto"``, ``"cpu"``, ``"cuda"``).
        max_images: at most this many images are offered in the image menu.
        max_points: points in the 3D view.
        scale: overlay enlargement (default: 3 for images up to 128 pixels, else 1-2).
        tile: images larger than this are run and decoded by sliding window
            (:func:`labkit.evaluation.tile_windows`, :func:`~labkit.evaluation.decode_windows`);
            None: the crop a folder-trained run recorded in ``run.json``, as
            ``labkit evaluate``/``predict`` do (:func:`labkit.workflows.resolve_tile`); 0: whole images.

    Attributes: ``method``, ``model``, ``controls`` (name -> widget),
    ``history`` (one record per decode: the parameters, ``n_instances``,
    ``seconds`` and the scores), ``prediction`` (the current one), ``figure``
    (the current 3D view, a plotly figure),
    ``widget`` (the layout; its element class is ``labkit-model-explorer``).
    """

    def __init__(
        self, checkpoint: str | Path, images: Any = None, *, run_dir: str | Path | None = None, index: int = 0,
        device: str = "auto", max_images: int = 50, max_points: int = 3000, scale: int | None = None,
        tile: int | None = None,
    ) -> None:
        from labkit.checkpoint import checkpoint_path
        from labkit.train import load_checkpoint
        from labkit.tuning import read_decode_json
        from labkit.workflows import resolve_tile

        self.method, self.model, saved_checkpoint = load_checkpoint(checkpoint, device=device)
        if images is None:
            images = training_images((saved_checkpoint.get("data") or {}).get("spec"))
        self.device = next(self.model.parameters(), torch.zeros(0)).device
        self.run_dir = Path(run_dir) if run_dir is not None else checkpoint_path(checkpoint).parent
        self.dataset = open_images(images)
        self.max_points, self.scale = int(max_points), scale
        self.tile = resolve_tile(checkpoint, tile)
        self.windows: list[tuple[int, int, int, int]] = []
        self.grid = check_grid(self.method.decode_grid())
        saved = read_decode_json(self.run_dir) or {}
        self.fixed = {k: v for k, v in saved.items() if k not in self.grid}  # kept as saved, no control
        start = initial_decode_params(self.method, self.grid, saved)
        self.controls = {name: decode_control(name, self.grid[name], start[name]) for name in self.grid}
        self.history: list[dict[str, Any]] = []
        self.prediction: dict[str, Any] | None = None
        self.figure: go.Figure | None = None
        self.outputs: dict[str, torch.Tensor] = {}
        self.sample: dict[str, Any] = {}
        self.index = int(index)

        count = min(len(self.dataset), int(max_images))
        if not 0 <= index < count:
            raise LabkitError(f"index {index} is outside the {count} images offered")
        self.image_menu = widgets.Dropdown(
            options=[(_name(self.dataset, i), i) for i in range(count)], value=index, description="image",
        )
        self.count = widgets.HTML()
        self.count.add_class("labkit-instance-count")
        self.metrics = widgets.HTML()
        self.metrics.add_class("labkit-metrics")
        self.picture = widgets.Image(format="png")
        self.view3d = widgets.Output(layout=widgets.Layout(width="520px"))
        self.view3d.add_class("labkit-embedding-3d")
        self.save_button = widgets.Button(description="Save decode.json", icon="save", button_style="primary",
                                          layout=widgets.Layout(width="auto"))
        self.save_button.add_class("labkit-save")
        self.save_status = widgets.HTML()
        self.save_status.add_class("labkit-save-status")
        self.widget = widgets.VBox([
            widgets.HBox([self.image_menu, self.save_button, self.save_status]),
            widgets.HBox(list(self.controls.values())) if self.controls
            else widgets.HTML(f"<i>{html.escape(self.method.key)} has no decode parameters to tune</i>"),
            widgets.HBox([self.count, self.metrics]),
            widgets.HBox([self.picture, self.view3d]),
        ])
        self.widget.add_class("labkit-model-explorer")
        self.image_menu.observe(self._on_image, names="value")
        for control in self.controls.values():
            control.observe(self._on_control, names="value")
        self.save_button.on_click(lambda _: self.save())
        self.select(index)

    # -- state ------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The decode parameters the controls show now, plus those of ``decode.json`` without a control."""
        return {**self.fixed, **{name: _plain(c.value) for name, c in self.controls.items()}}

    def select(self, index: int) -> dict[str, Any]:
        """Run the model on image ``index`` (once) and decode it; returns the history record."""
        from labkit.data.folder import image_channels
        from labkit.evaluation import image_windows, window_outputs

        sample = self.dataset[int(index)]
        image = torch.as_tensor(sample["image"]).float()
        in_channels = getattr(self.model, "config", {}).get("in_channels")
        if in_channels:
            image = image_channels(image, int(in_channels))
            if image.shape[0] != int(in_channels):
                raise DataError(
                    f"{_name(self.dataset, index)}: {image.shape[0]} channels, the model takes {in_channels}"
                )
        size = tuple(image.shape[-2:])
        windows = image_windows(size, self.tile or None) or [(0, 0, *size)]
        was_training = self.model.training
        self.model.eval()
        try:
            self.outputs = window_outputs(self.model, image, windows, device=self.device)
        finally:
            self.model.train(was_training)
        self.windows, self.sample, self.index = windows, sample, int(index)
        return self.update()

    def update(self) -> dict[str, Any]:
        """Decode the stored outputs with the current parameters and redraw; returns the history record."""
        from labkit.clustering import score_instances
        from labkit.evaluation import decode_windows

        params = self.params()
        start = time.perf_counter()
        prediction = decode_windows(self.method, self.outputs, self.windows, **params)
        seconds = time.perf_counter() - start
        self.prediction = prediction
        instances = prediction["instances"]
        n_instances = int(len(torch.unique(instances[instances > 0])))
        gt = self.sample.get("instances")
        scores = score_instances(prediction, gt) if gt is not None else None
        self.count.value = f"<b>{n_instances}</b> instances"
        parts = [f"{label} {scores[key]:.3f}" for key, (label, _) in METRIC_STYLE.items()
                 if scores is not None and scores.get(key) is not None]
        self.metrics.value = html.escape(" · ".join([*parts, f"decode {1000 * seconds:.0f} ms"]))
        height, width = instances.shape
        scale = self.scale or (3 if max(height, width) <= 128 else 2 if max(height, width) <= 320 else 1)
        self.picture.value = overlay_png(self.sample["image"], instances, scale)
        self._draw_3d(instances, params)
        record = {**params, "image": self.index, "n_instances": n_instances, "seconds": seconds,
                  **(scores or {})}
        self.history.append(record)
        return record

    def save(self) -> Path:
        """Write the current parameters to ``RUN_DIR/decode.json`` (:func:`labkit.tuning.write_decode_json`)."""
        from labkit.tuning import write_decode_json

        params = self.params()
        try:
            path = write_decode_json(self.run_dir, params)
        except LabkitError as exc:
            self.save_status.value = f"<span style='color:#b00'>not saved: {html.escape(str(exc))}</span>"
            raise
        path = Path(path) if path is not None else self.run_dir / "decode.json"
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        self.save_status.value = f"saved {html.escape(shown)} to {html.escape(str(path))}"
        log.info("saved decode parameters %s to %s", params, path)
        return path

    # -- drawing and callbacks ---------------------------------------------
    def _draw_3d(self, instances: torch.Tensor, params: Mapping[str, Any]) -> None:
        embedding = self.outputs.get("embedding")
        self.figure = None
        if embedding is not None:
            sphere = "embedding" in self.method.normalized_heads()
            title = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
            pasted = paste_windows(embedding, self.windows, tuple(instances.shape))
            self.figure = embedding_figure(pasted, instances, max_points=self.max_points, sphere=sphere,
                                           title=f"embedding of the decoded instances ({title})")
        with self.view3d:
            self.view3d.clear_output(wait=True)
            if self.figure is None:
                display(widgets.HTML(f"<i>{html.escape(self.method.key)} has no embedding head to show</i>"))
            else:
                display(self.figure)

    def _on_image(self, change: dict[str, Any]) -> None:
        self.select(int(change["new"]))

    def _on_control(self, _: Any) -> None:
        self.update()

    def _ipython_display_(self) -> None:
        display(self.widget)
