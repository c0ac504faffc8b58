"""Thomson problem (HLE Eq. 17) solved by gradient descent on the sphere."""
from __future__ import annotations

import pytest
import torch

from labkit.clustering.thomson import thomson_energy, thomson_points
from labkit.errors import LabkitError


def test_energy_hand_computed() -> None:
    points = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # d_cos: (1,2) 2, (1,3) 1, (2,3) 1; both orders: 2 * (1/2 + 1 + 1)
    assert thomson_energy(points).item() == pytest.approx(5.0)


def test_energy_decreases_and_points_stay_on_sphere() -> None:
    points, energies = thomson_points(7, 3, steps=200, seed=3)
    assert len(energies) == 201
    assert bool((energies[1:] <= energies[:-1] + 1e-12).all())
    assert energies[-1] < 0.7 * energies[0]
    assert torch.allclose(points.norm(dim=1), torch.ones(7, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_four_points_form_a_regular_tetrahedron(seed: int) -> None:
    points, _ = thomson_points(4, 3, seed=seed)
    cos = points @ points.t()
    off = ~torch.eye(4, dtype=torch.bool)
    assert torch.allclose(cos[off], torch.full((12,), -1 / 3, dtype=torch.float64), atol=1e-3)


def test_simplex_in_higher_dimension_and_antipodes() -> None:
    points, _ = thomson_points(5, 6, seed=0)
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.allclose((points @ points.t())[off], torch.full((20,), -0.25, dtype=torch.float64), atol=1e-3)
    pair, _ = thomson_points(2, 3)
    assert float(pair[0] @ pair[1]) == pytest.approx(-1.0, abs=1e-6)


def test_bad_parameters() -> None:
    with pytest.raises(LabkitError):
        thomson_points(0, 3)
    with pytest.raises(LabkitError):
        thomson_points(3, 1)
    with pytest.raises(LabkitError):
        thomson_points(3, 3, lr=0)
    with pytest.raises(LabkitError):
        thomson_energy(torch.zeros(3))
