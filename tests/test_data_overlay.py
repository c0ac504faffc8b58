"""labkit.viz.overlay: stable instance colours, blending, and a gallery Figure (no pyplot, Agg)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from labkit.data import SyntheticScenes
from labkit.viz.overlay import blend, boundaries, display_image, gallery, instance_colors, overlay


def test_colours_are_stable_and_distinct():
    assert np.array_equal(instance_colors([5])[0], instance_colors([1, 5, 9])[1])
    colours = instance_colors(range(1, 41))
    assert len({tuple(np.round(c, 3)) for c in colours}) == 40
    assert colours.min() >= 0 and colours.max() <= 1


def test_display_image_handles_grey_and_colour():
    grey = torch.full((1, 4, 5), 0.25)
    assert display_image(grey).shape == (4, 5, 3) and np.allclose(display_image(grey), 0.25)
    rgb = np.random.default_rng(0).random((3, 4, 5))
    assert np.allclose(display_image(rgb), np.moveaxis(rgb, 0, -1))
    assert display_image(np.ones((4, 5)) * 2).max() == 1.0  # clipped
    with pytest.raises(ValueError):
        display_image(np.zeros((2, 2, 2, 2)))


def test_blend_tints_instances_and_outlines_them():
    image = torch.full((1, 10, 10), 0.5)
    inst = torch.zeros(10, 10, dtype=torch.int64)
    inst[2:7, 2:7] = 3
    out = blend(image, inst, alpha=0.5)
    assert np.allclose(out[0, 0], 0.5) and np.allclose(out[9, 9], 0.5)  # background untouched
    colour = instance_colors([3])[0]
    assert np.allclose(out[2, 2], colour)  # boundary pixel in the instance colour
    assert np.allclose(out[4, 4], 0.5 * 0.5 + 0.5 * colour)  # interior: blended
    edge = boundaries(inst)
    assert edge[2, 2] and not edge[4, 4] and not edge[1, 1] and edge.sum() == 16
    with pytest.raises(ValueError, match="does not match"):
        blend(image, inst[:5])


def test_overlay_and_gallery_build_figures():
    ds = SyntheticScenes("digits", "val", num_samples=5)
    ax = overlay(ds[0]["image"], ds[0]["instances"], title="one")
    assert isinstance(ax, Axes) and ax.get_title() == "one"
    fig = gallery([ds[i] for i in range(5)], ncols=3)
    assert isinstance(fig, Figure)
    panels = [a for a in fig.axes if a.images]
    assert len(fig.axes) == 6 and len(panels) == 5
    assert panels[0].get_title().startswith("digits_val_00000 (")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        gallery([])
