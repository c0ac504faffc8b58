"""DVIS discretisation: 1-D mean shift at two bandwidths, connected pieces, filtering, pooling without duplicates."""
from __future__ import annotations

import pytest
import torch

from labkit.clustering.discretize import discretize
from labkit.errors import DataError, LabkitError


def plateaus(noise: float = 0.04, seed: int = 0) -> torch.Tensor:
    """A 40x40 map with three 10x10 plateaus at 1, 2, 3 on a zero background, plus uniform noise."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.zeros(40, 40)
    f[2:12, 2:12], f[2:12, 20:30], f[20:30, 2:12] = 1.0, 2.0, 3.0
    return (f + noise * 2 * (torch.rand(40, 40, generator=gen) - 0.5)).clamp(min=0)


def test_three_plateaus_give_three_instances():
    c = discretize(plateaus(), fg_threshold=0.5)
    assert len(c) == 3
    assert sorted(c.areas.tolist()) == [100, 100, 100]
    assert torch.allclose(c.values.sort().values, torch.tensor([1.0, 2.0, 3.0]), atol=0.02)
    assert (c.levels == 0).all(), "the 0.4 candidates are duplicates of the 0.9 ones"
    # every mask is one of the plateaus, with its box
    truth = plateaus(noise=0.0)
    for mask, box in zip(c.masks, c.boxes):
        assert truth[mask].unique().numel() == 1
        ys, xs = mask.nonzero(as_tuple=True)
        assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_plateaus_0p6_apart_merge_at_0p9_and_split_at_0p4():
    f = torch.zeros(20, 40)
    f[5:15, 2:15], f[5:15, 15:30] = 2.0, 2.6  # touching, 0.6 apart
    assert sorted(discretize(f, (0.9,)).areas.tolist()) == [280]
    assert sorted(discretize(f, (0.4,)).areas.tolist()) == [130, 150]
    pooled = discretize(f)  # both: the merged one first, then the two halves (not duplicates of it)
    assert pooled.areas.tolist() == [280, 130, 150] and pooled.levels.tolist() == [0, 1, 1]
    assert len(pooled.label_maps) == 2


def test_equal_values_far_apart_are_separate_pieces():
    f = torch.zeros(20, 40)
    f[2:8, 2:8] = 2.0
    f[12:18, 30:36] = 2.0
    c = discretize(f)
    assert len(c) == 2 and c.areas.tolist() == [36, 36]


def test_piece_gap_also_joins_the_pieces_of_an_object_cut_by_another_on_top():
    f = torch.zeros(30, 40)
    f[13:17, 2:38] = 2.0  # a horizontal stick at 2 ...
    f[2:28, 18:22] = 3.0  # ... under a vertical one at 3, which cuts it in two pieces of 64 pixels
    f[27:29, 2:8] = 2.0  # another object at 2, 10 rows away from the stick
    plain = discretize(f, (0.9,))
    assert sorted(plain.areas.tolist()) == [12, 64, 64, 104]
    joined = discretize(f, (0.9,), piece_gap=3)  # 3 bridges the 4-pixel cut, not the 10 rows
    assert sorted(joined.areas.tolist()) == [12, 64, 64, 104, 128]  # the pieces, and the whole stick
    whole = joined.masks[joined.areas == 128][0]
    assert whole[13:17, 2:18].all() and whole[13:17, 22:38].all() and not whole[13:17, 18:22].any()
    assert (joined.levels == 0).all() and len(joined.label_maps) == 1
    assert len(discretize(f, (0.9,), piece_gap=1)) == 4  # too narrow to bridge the cut: nothing new
    with pytest.raises(LabkitError, match="piece_gap"):
        discretize(f, piece_gap=-1)


def test_edge_threshold_cuts_touching_objects_along_the_step_between_their_values():
    f = torch.zeros(20, 40)
    f[5:15, 2:15], f[5:15, 15:30] = 2.0, 2.2  # touching, 0.2 apart: one cluster at both bandwidths
    f[5:15, 32:38] = torch.linspace(2.0, 2.25, 6)  # a smooth ramp of 0.05 a pixel: no edge inside
    plain = discretize(f)
    assert sorted(plain.areas.tolist()) == [60, 280]
    cut = discretize(f, edge_threshold=0.15)
    assert sorted(cut.areas.tolist()) == [60, 130, 150]
    left, right = (cut.masks[cut.areas == a][0] for a in (130, 150))
    assert left[5:15, 2:15].all() and right[5:15, 15:30].all()  # the edge pixels went back to their own side
    assert discretize(f, edge_threshold=0.3).areas.tolist() == plain.areas.tolist()  # the step is below 0.3
    with pytest.raises(LabkitError, match="edge_threshold"):
        discretize(f, edge_threshold=0)


def test_edge_threshold_drops_a_cluster_that_is_all_edge():
    f = torch.zeros(20, 20)
    f[5:15, 9] = 2.0  # a one-pixel line: every pixel's 3x3 neighbourhood reaches the background
    f[5:15, 12:18] = 3.0
    c = discretize(f, (0.4,), edge_threshold=1.0)
    assert c.areas.tolist() == [60]  # the block, grown back over its own rim; the line has no core


def test_small_and_low_valued_candidates_are_dropped():
    f = torch.zeros(20, 40)
    f[2:12, 2:12] = 2.0
    f[15:17, 30:32] = 3.0  # 4 pixels
    f[2:12, 20:30] = 1.2  # low mean value
    c = discretize(f, fg_threshold=1.0, min_area=8, min_mean=1.5)
    assert c.areas.tolist() == [100]
    assert len(discretize(f, fg_threshold=1.0, min_area=4, min_mean=1.0)) == 3
    assert len(discretize(f, max_candidates=1, min_area=1)) == 1


def test_min_radius_drops_the_band_of_in_between_values_where_two_objects_touch():
    f = torch.zeros(14, 24)
    f[2:12, 1:10], f[2:12, 10:13], f[2:12, 13:22] = 2.0, 3.0, 4.0  # a 3-pixel step band between two blocks
    assert sorted(discretize(f, (0.9,)).areas.tolist()) == [30, 90, 90]
    c = discretize(f, (0.9,), min_radius=3)
    assert sorted(c.areas.tolist()) == [90, 90] and torch.allclose(c.values.sort().values, torch.tensor([2.0, 4.0]))
    assert len(discretize(f, (0.9,), min_radius=2)) == 3  # the band's radius is 2
    with pytest.raises(LabkitError, match="min_radius"):
        discretize(f, min_radius=-1)


def test_empty_map_and_duplicates_across_bandwidths():
    c = discretize(torch.zeros(10, 10))
    assert len(c) == 0 and c.masks.shape == (0, 10, 10)
    f = torch.zeros(10, 10)
    f[2:8, 2:8] = 2.0
    c = discretize(f, (0.9, 0.4, 0.2))
    assert len(c) == 1  # the same plateau at every bandwidth
    assert len(discretize(f, (0.9, 0.4), duplicate_iou=1.0)) == 1  # identical masks have IoU 1


def test_bad_input():
    with pytest.raises(DataError, match="NaN"):
        discretize(torch.full((4, 4), float("nan")))
    with pytest.raises(DataError, match="one label map"):
        discretize(torch.zeros(2, 4, 4))
    with pytest.raises(LabkitError, match="bandwidths"):
        discretize(torch.zeros(4, 4), (0.9, -0.4))
    with pytest.raises(LabkitError, match="min_area"):
        discretize(torch.zeros(4, 4), min_area=0)
    with pytest.raises(LabkitError, match="duplicate_iou"):
        discretize(torch.zeros(4, 4), duplicate_iou=0.0)
