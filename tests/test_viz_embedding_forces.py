"""Tests of the pull/push force pictures of the discriminative loss."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from labkit.errors import DataError
from labkit.viz.forces import discriminative_forces, plot_discriminative_forces


def test_push_on_two_close_centres_by_hand():
    # Centres (0,0) and (1,0), d = 1 < 2 delta_d = 3.  L_dist = (3 - 1)^2 (two ordered pairs / 2),
    # dL/dmu_A = -2 (3 - d) (mu_A - mu_B) / d = (4, 0)  ->  push on A = (-4, 0), on B = (4, 0).
    f = discriminative_forces([[0, 0], [0, 0], [1, 0]], [1, 1, 2], delta_v=0.5, delta_d=1.5)
    assert np.allclose(f["centres"], [[0, 0], [1, 0]])
    assert np.allclose(f["push"], [[-4, 0], [4, 0]])
    assert np.allclose(f["pull"], 0)  # every pixel sits on its centre


def test_pull_by_hand():
    # Instance 1: (-1,0),(1,0),(0,0) -> centre (0,0); instance 2: one far pixel (var 0), so C = 2.
    # L_var = 1/2 * 1/3 * sum_i [d_i - 0.5]^2.  Pixel 1: d = 1, direct gradient
    # 1/6 * 2 (1 - 0.5) (x_1 - mu) / d = (-1/6, 0); the terms through the centre cancel by
    # symmetry, so pull = (1/6, 0), pixel 2 gets (-1/6, 0), the pixel on the centre nothing.
    f = discriminative_forces([[-1, 0], [1, 0], [0, 0], [10, 10]], [1, 1, 1, 2])
    assert np.allclose(f["pull"], [[1 / 6, 0], [-1 / 6, 0], [0, 0], [0, 0]])
    assert np.allclose(f["push"], 0)  # centres far apart


def test_pull_is_the_total_derivative_through_the_centre():
    # The pixel at (0, 0.2) is within delta_v of the centre (0, 0.0667) yet moves, because the
    # pixels outside delta_v pull the centre, which depends on it.
    f = discriminative_forces([[-1, 0], [1, 0], [0, 0.2]], [1, 1, 1])
    assert f["pull"][0, 0] > 0 and f["pull"][1, 0] < 0
    assert f["pull"][2, 1] < 0 and f["pull"][2, 0] == 0


def test_background_feels_nothing():
    f = discriminative_forces([[0, 0], [0.1, 0], [5, 5]], [1, 2, 0])
    assert list(f["ids"]) == [1, 2]
    assert np.allclose(f["pull"][2], 0)


def test_plot_builds_with_and_without_axes():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 0.6, (10, 2)), rng.normal(1.5, 0.4, (10, 2)), [[4, 4]]])
    labels = np.array([1] * 10 + [2] * 10 + [0])
    ax = plot_discriminative_forces(pts, labels)
    assert len(ax.patches) == 4  # two circles per centre
    assert len(ax.collections) >= 2 + 2 + 2  # points + centres + two arrow sets
    given = Figure().add_subplot()
    assert plot_discriminative_forces(pts, labels, delta_v=0.3, delta_d=1.0, ax=given) is given


def test_bad_shapes_raise():
    with pytest.raises(DataError):
        discriminative_forces(np.zeros((3, 3)), [1, 1, 2])
