"""HLE figures: the hierarchy on the sphere and a pixel's cosine-distance map."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.errors import DataError
from labkit.viz.hierarchy import cosine_distance_map, hierarchy_scatter3d


def test_hierarchy_traces_and_distance_map() -> None:
    emb = F.normalize(torch.randn(3, 8, 8), dim=0)
    inst = torch.zeros(8, 8, dtype=torch.int64)
    inst[:3, :3], inst[5:, 5:] = 4, 9
    sem = torch.full((8, 8), 5)
    sem[inst > 0] = 1
    means = torch.randn(6, 3)
    fig = hierarchy_scatter3d(emb, inst, sem, means, ["bg", "disk", "b", "c", "d", "water"])
    names = [t.name for t in fig.data]
    assert names == ["unit sphere", "water (stuff)", "disk #4", "disk #9", "class means"]
    assert len(fig.data[-1].x) == 6 and fig.data[-1].text[1] == "disk"
    assert sum(len(t.x) for t in fig.data[1:-1]) == 64
    d = cosine_distance_map(emb, 1, 1)
    assert d.shape == (8, 8) and d[1, 1] == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(d, 1 - np.einsum("d,dhw->hw", emb[:, 1, 1].double().numpy(), emb.double().numpy()), atol=1e-6)
    with pytest.raises(DataError):
        cosine_distance_map(emb, 8, 0)
    with pytest.raises(DataError):
        hierarchy_scatter3d(emb, inst, sem, torch.randn(6, 4))
