"""The bandwidth explorer and sweep figure (labkit.viz.bandwidth), without a browser."""
import numpy as np
from matplotlib.figure import Figure

from labkit.clustering import bandwidth_sweep
from labkit.clustering.demo import synthetic_embedding_map
from labkit.viz.bandwidth import BandwidthExplorer, describe, overlay_png, plot_sweep


def scene():
    return synthetic_embedding_map(size=40, n_objects=4, seed=3)


def test_explorer_reclusters_when_the_slider_moves():
    s = scene()
    explorer = BandwidthExplorer(s["embedding"], s["instances"], s["image"], s["foreground"], bandwidth=0.3)
    assert "<b>4</b> clusters" in explorer.count.value and "ARI 1.000" in explorer.metrics.value
    assert bytes(explorer.picture.value).startswith(b"\x89PNG")
    explorer.slider.value = 1.5
    assert explorer.history[-1]["bandwidth"] == 1.5 and explorer.history[-1]["n_clusters"] < 4
    assert f"<b>{explorer.history[-1]['n_clusters']}</b> clusters" in explorer.count.value
    explorer.kernel.value = "vmf"
    assert explorer.history[-1]["kernel"] == "vmf" and len(explorer.history) == 3
    assert "labkit-cluster-count" in explorer.count._dom_classes


def test_explorer_without_ground_truth_shows_only_time():
    s = scene()
    explorer = BandwidthExplorer(s["embedding"], bandwidth=0.3, foreground=s["foreground"])
    assert explorer.metrics.value.endswith("ms") and "ARI" not in explorer.metrics.value


def test_describe_and_overlay():
    count, text = describe({"n_clusters": 3, "seconds": 0.012}, {"ari": 0.5, "matching_accuracy": 0.25, "ap50": None})
    assert count == "<b>3</b> clusters" and text == "ARI 0.500 · matching accuracy 0.250 · 12 ms"
    png = overlay_png(np.zeros((1, 5, 7)), np.eye(5, 7, dtype=np.int64), scale=2)
    assert png.startswith(b"\x89PNG")


def test_plot_sweep():
    s = scene()
    rows = bandwidth_sweep(s["embedding"], s["instances"], [0.1, 0.3, 1.0], foreground=s["foreground"])
    fig = plot_sweep(rows, title="demo", best=0.3)
    assert isinstance(fig, Figure)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert {"clusters", "ARI", "matching accuracy", "AP50"} <= set(labels)
