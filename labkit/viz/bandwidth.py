"""Bandwidth tuning: the sweep curve (matplotlib) and the live explorer (ipywidgets).

The explorer's callback only calls :func:`labkit.clustering.cluster_map` and
:func:`labkit.clustering.score_instances` and renders the overlay with
:func:`labkit.viz.overlay.blend`; those are tested on their own.
"""
from __future__ import annotations

import html
import io
from typing import Any, Sequence

import ipywidgets as widgets
import numpy as np
from IPython.display import display
from matplotlib.figure import Figure
from PIL import Image as PILImage

from labkit.clustering import cluster_map, score_instances
from labkit.viz.overlay import blend

METRIC_STYLE = {"ari": ("ARI", "-"), "matching_accuracy": ("matching accuracy", "--"), "ap50": ("AP50", ":")}


def plot_sweep(rows: Sequence[dict[str, Any]], title: str | None = None, best: float | None = None) -> Figure:
    """Number of clusters (log scale, left) and the scores (right) against the bandwidth.

    ``rows`` come from :func:`labkit.clustering.bandwidth_sweep`; ``best``
    marks a bandwidth with a vertical line.
    """
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    x = [r["bandwidth"] for r in rows]
    ax.plot(x, [max(r["n_clusters"], 1) for r in rows], "o-", color="0.3", label="clusters")
    ax.set_yscale("log")
    ax.set_xlabel("bandwidth")
    ax.set_ylabel("number of clusters")
    right = ax.twinx()
    for key, (label, style) in METRIC_STYLE.items():
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            right.plot(x, [np.nan if v is None else v for v in values], style, marker=".", label=label)
    right.set_ylim(0, 1.02)
    right.set_ylabel("score")
    if best is not None:
        ax.axvline(best, color="tab:red", alpha=0.4, lw=2)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    right.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def overlay_png(image: Any, instances: Any, scale: int = 3) -> bytes:
    """PNG bytes of ``image`` with the instances tinted and outlined, enlarged ``scale`` times (nearest)."""
    rgb = (blend(image, instances, alpha=0.55) * 255).round().astype(np.uint8)
    picture = PILImage.fromarray(rgb)
    if scale != 1:
        picture = picture.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), PILImage.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="png")
    return buffer.getvalue()


def describe(prediction: dict[str, Any], scores: dict[str, Any] | None) -> tuple[str, str]:
    """The explorer's two text lines (HTML): the cluster count and the metrics."""
    count = f"<b>{prediction['n_clusters']}</b> clusters"
    parts = [f"{1000 * prediction['seconds']:.0f} ms"]
    if scores is not None:
        parts = [
            f"{label} {scores[key]:.3f}" for key, (label, _) in METRIC_STYLE.items() if scores.get(key) is not None
        ] + parts
    return count, html.escape(" · ".join(parts))


class BandwidthExplorer:
    """A bandwidth slider and a kernel toggle that re-cluster an embedding map live.

    Every change calls :func:`labkit.clustering.cluster_map` on the stored
    ``embedding`` ``[D, H, W]`` (``foreground`` pixels only), redraws the
    instance overlay on ``image`` and shows the cluster count (element class
    ``labkit-cluster-count``) and, with ``gt_instances``, ARI, matching
    accuracy and AP50 (element class ``labkit-metrics``). ``history`` keeps
    one record per update. Display it as the last expression of a cell.
    """

    def __init__(
        self,
        embedding: Any,
        gt_instances: Any = None,
        image: Any = None,
        foreground: Any = None,
        bandwidth: float = 0.3,
        bandwidth_range: tuple[float, float] = (0.05, 1.5),
        step: float = 0.05,
        kernels: Sequence[str] = ("flat", "gaussian", "vmf"),
        kernel: str = "flat",
        scale: int = 3,
    ) -> None:
        self.embedding, self.gt, self.foreground, self.scale = embedding, gt_instances, foreground, scale
        self.image = image if image is not None else np.zeros(np.shape(embedding)[-2:], dtype=np.float32)
        self.history: list[dict[str, Any]] = []
        self.slider = widgets.FloatSlider(
            value=bandwidth, min=bandwidth_range[0], max=bandwidth_range[1], step=step, description="bandwidth",
            continuous_update=False, readout_format=".2f", style={"description_width": "initial"},
        )
        self.kernel = widgets.ToggleButtons(options=list(kernels), value=kernel, description="kernel")
        self.count = widgets.HTML()
        self.count.add_class("labkit-cluster-count")
        self.metrics = widgets.HTML()
        self.metrics.add_class("labkit-metrics")
        self.picture = widgets.Image(format="png")
        self.widget = widgets.VBox(
            [widgets.HBox([self.slider, self.kernel]), widgets.HBox([self.count, self.metrics]), self.picture]
        )
        self.slider.observe(self.update, names="value")
        self.kernel.observe(self.update, names="value")
        self.update()

    def update(self, *_: Any) -> dict[str, Any]:
        """Re-cluster at the current slider and kernel values and redraw; returns the history record."""
        bandwidth, kernel = float(self.slider.value), str(self.kernel.value)
        prediction = cluster_map(self.embedding, bandwidth, kernel=kernel, foreground=self.foreground)
        scores = score_instances(prediction, self.gt) if self.gt is not None else None
        self.count.value, self.metrics.value = describe(prediction, scores)
        self.picture.value = overlay_png(self.image, prediction["instances"], self.scale)
        record = {"bandwidth": bandwidth, "kernel": kernel, "n_clusters": prediction["n_clusters"],
                  "seconds": prediction["seconds"], **(scores or {})}
        self.history.append(record)
        return record

    def _ipython_display_(self) -> None:
        display(self.widget)
