"""Tests of the margin guidance of Kong & Fowlkes Sec. 3.2 (Proposition 2)."""
import math

import pytest
import torch

from labkit.errors import DataError
from labkit.losses.margins import (
    max_instances_for_margin,
    max_margin_for_instances,
    max_similarity,
    spread_on_sphere,
    tammes_alpha_bound,
)


def _alpha_of_angle(degrees):
    """Calibrated similarity (Eq. 1) of two unit vectors at this angle."""
    return (1 + math.cos(math.radians(degrees))) / 2


def test_proposition_2_reproduces_the_papers_numbers():
    # "if an image has at most {4, 5, 6, 7} instances, alpha can be set as small as
    #  {0.093, 0.274, 0.395, 0.482}": 1 - 2 pi / (sqrt 3 n), e.g. n = 4: 1 - 3.6276 / 4 = 0.0931.
    got = [round(tammes_alpha_bound(n), 3) for n in (4, 5, 6, 7)]
    assert got == [0.093, 0.274, 0.395, 0.482]


@pytest.mark.parametrize(
    "n, dim, alpha",
    [
        (1, 3, 0.0),
        (2, 3, 0.0),  # antipodal: cos -1 -> s 0
        (3, 3, 0.25),  # triangle: cos -1/2 -> s 1/4
        (4, 3, 1 / 3),  # tetrahedron: cos -1/3 -> s 1/3
        (5, 3, 0.5),  # right angles (Rankin)
        (6, 3, 0.5),  # octahedron
        (65, 64, 63 / 128),  # 64-dim simplex: cos -1/64 -> s (1 - 1/64) / 2
        (128, 64, 0.5),  # the paper's setting: n/2 dims, alpha = 0.5
    ],
)
def test_exact_margins(n, dim, alpha):
    assert max_margin_for_instances(n, dim) == pytest.approx(alpha)


@pytest.mark.parametrize("n, degrees", [(7, 77.8695), (8, 74.8585), (12, 63.4349)])
def test_numerical_margins_are_close_to_known_tammes_optima(n, degrees):
    # Best known minimum angles on the 2-sphere; the construction can only be worse (larger alpha).
    optimum = _alpha_of_angle(degrees)
    got = max_margin_for_instances(n, 3)
    assert optimum - 1e-4 <= got <= optimum + 3e-3
    assert got > tammes_alpha_bound(n)


def test_spread_on_sphere_gives_unit_vectors_deterministically():
    a, b = spread_on_sphere(9, 4, seed=3), spread_on_sphere(9, 4, seed=3)
    assert a.shape == (9, 4)
    assert torch.allclose(a.norm(dim=1), torch.ones(9, dtype=torch.float64))
    assert torch.equal(a, b)
    assert max_similarity(a) == pytest.approx(max_margin_for_instances(9, 4), abs=0.05)


def test_max_similarity_by_hand():
    # (1,0) and (0,1): cos 0 -> 0.5; (1,0) and (1,1): cos 1/sqrt 2 -> (1 + 0.7071) / 2 = 0.8536
    pts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    assert max_similarity(pts) == pytest.approx((1 + 1 / math.sqrt(2)) / 2)


@pytest.mark.parametrize(
    "alpha, dim, n",
    [(0.0, 3, 2), (0.25, 3, 3), (1 / 3, 3, 4), (0.4, 3, 4), (0.5, 3, 6), (0.5, 64, 128), (0.49, 64, 51)],
)
def test_max_instances_for_margin_exact_cases(alpha, dim, n):
    # (0.49, 64): simplex needs (n - 2) / (2 (n - 1)) <= 0.49  <=>  n <= 1.02 / 0.02 = 51
    assert max_instances_for_margin(alpha, dim) == n


def test_max_instances_for_margin_above_one_half_on_the_2_sphere():
    # Icosahedron: 12 points with s = 0.7236 <= 0.73; 13 points need s >= 0.7713.
    assert max_instances_for_margin(0.73, 3) == 12


def test_bad_arguments_raise():
    with pytest.raises(DataError):
        max_margin_for_instances(0)
    with pytest.raises(DataError):
        max_margin_for_instances(3, dim=0)
    with pytest.raises(DataError):
        max_instances_for_margin(1.5)
