"""DVIS loss terms (Sec. 3.3): hand-computed values, gradients, permutation invariance, edge cases, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from labkit.errors import DataError, LabkitError
from labkit.losses.dvis import (
    binary_loss, dvis_loss, huber, mumford_shah_loss, pairwise_loss, quantization_loss, stratified_offsets,
)

TINY = dict(window=3, center=1, dilation=1)


def test_huber_values():
    v = torch.tensor([0.0, 0.05, 0.1, 0.5])
    assert torch.allclose(huber(v, 0.1), torch.tensor([0.0, 0.0125, 0.05, 0.45]))


def test_binary_loss_hand_computed():
    f = torch.tensor([[[0.05, 1.5, 3.0]]])
    inst = torch.tensor([[[0, 1, 1]]])
    # background 0.05 -> 0.05^2/0.2 = 0.0125; foreground 1.5 -> L_h(0.5) = 0.45; foreground 3 >= m1 -> 0
    assert binary_loss(f, inst).item() == pytest.approx((0.0125 + 0.45) / 3)
    # m1 = 1 (authors' code): 1.5 is then far enough
    assert binary_loss(f, inst, m1=1.0).item() == pytest.approx(0.0125 / 3)


def test_pairwise_loss_hand_computed():
    inst = torch.tensor([[[1, 1, 2]]])
    # horizontal pairs (0,1) same: |2 - 2.05| = 0.05 -> 0.0125; (1,2) different: 1.45 apart >= m2 -> 0
    f = torch.tensor([[[2.0, 2.05, 3.5]]])
    assert pairwise_loss(f, inst, **TINY).item() == pytest.approx(0.0125 / 2, rel=1e-5)
    # different pair only 0.5 apart: L_h(1 - 0.5) = 0.45
    f = torch.tensor([[[2.0, 2.05, 2.55]]])
    assert pairwise_loss(f, inst, **TINY).item() == pytest.approx((0.0125 + 0.45) / 2, rel=1e-5)
    # authors' code weights different pairs x3
    assert pairwise_loss(f, inst, different_weight=3.0, **TINY).item() == pytest.approx((0.0125 + 1.35) / 2, rel=1e-5)


def test_pairwise_loss_min_pair_loss_averages_only_the_violated_pairs():
    inst = torch.tensor([[[1, 1, 2]]])
    f = torch.tensor([[[2.0, 2.05, 2.55]]])
    # pair losses 0.0125 (same, 0.05 apart) and 0.45 (different, 0.5 apart): above 1e-2 both count
    assert pairwise_loss(f, inst, min_pair_loss=1e-2, **TINY).item() == pytest.approx((0.0125 + 0.45) / 2, rel=1e-5)
    # above 0.02 only the different pair does (the authors' code averages this way, with 1e-2)
    assert pairwise_loss(f, inst, min_pair_loss=0.02, **TINY).item() == pytest.approx(0.45, rel=1e-5)
    random = dict(sampling="random", num_pairs=64, min_pair_loss=0.02)
    f2 = torch.tensor([[[2.0, 2.0, 2.5]]])  # same pair 0 (dropped), both different pairs 0.45
    assert pairwise_loss(f2, inst, generator=torch.Generator().manual_seed(0), **random).item() == pytest.approx(0.45)
    # nothing violated: 0, still attached to the graph
    f = torch.tensor([[[2.0, 2.0, 3.5]]], requires_grad=True)
    for sampling in ({}, random):
        out = pairwise_loss(f, inst, **{**TINY, "min_pair_loss": 0.02, **sampling})
        assert out.item() == 0.0 and out.requires_grad
    with pytest.raises(LabkitError, match="min_pair_loss"):
        pairwise_loss(f, inst, min_pair_loss=-1.0, **TINY)


def test_pairwise_loss_ignores_background_pairs():
    f = torch.tensor([[[2.0, 0.0, 7.0]]])
    inst = torch.tensor([[[1, 0, 1]]])
    # the only instance pair (0,2) is 2 apart, beyond the 3x3 window: no pair at all
    out = pairwise_loss(f.requires_grad_(), inst, **TINY)
    assert out.item() == 0.0 and out.requires_grad
    # a 5-wide window reaches it: same instance, |2 - 7| = 5 -> 4.95
    assert pairwise_loss(f, inst, window=5, center=2, dilation=1).item() == pytest.approx(4.95)


def test_random_pairs_sample_instance_pixels():
    f = torch.tensor([[[2.0, 0.0, 2.05]]])
    inst = torch.tensor([[[1, 0, 1]]])
    out = pairwise_loss(f, inst, sampling="random", num_pairs=64, generator=torch.Generator().manual_seed(0))
    assert out.item() == pytest.approx(0.0125, rel=1e-5)  # every drawn pair is (0,2) or (2,0)


def test_mumford_shah_hand_computed():
    f = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    # one pixel with both neighbours: (0-1)^2 + (0-2)^2 = 5 -> log 6
    assert mumford_shah_loss(f).item() == pytest.approx(math.log(6.0))
    assert mumford_shah_loss(torch.full((1, 4, 4), 3.0)).item() == 0.0


def test_quantization_hand_computed_and_gradient_through_f_only():
    f = torch.tensor([[[0.2, 1.7, 3.1]]], requires_grad=True)
    loss = quantization_loss(f)
    assert loss.item() == pytest.approx(0.2)
    loss.backward()
    assert torch.allclose(f.grad, torch.tensor([[[1.0, -1.0, 1.0]]]) / 3)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    inst = torch.tensor([[[1, 1, 2, 0], [1, 2, 2, 0], [0, 0, 3, 3]]])
    # values away from the kinks (|.| at 0, ReLU at 0, round at half-integers, Huber at theta is C1)
    f = (torch.tensor([[[2.13, 2.61, 3.37, 0.21], [1.71, 3.83, 2.96, 0.33], [0.44, 0.12, 4.36, 5.12]]])
         + 0.01 * torch.rand(1, 3, 4, generator=gen)).double().requires_grad_()
    for fn in (
        lambda x: binary_loss(x, inst),
        lambda x: pairwise_loss(x, inst, **TINY),
        lambda x: pairwise_loss(x, inst, min_pair_loss=1e-2, **TINY),
        lambda x: pairwise_loss(x, inst, sampling="random", num_pairs=32, generator=torch.Generator().manual_seed(1)),
        mumford_shah_loss,
        quantization_loss,
    ):
        assert torch.autograd.gradcheck(fn, (f,))


def _scene(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    inst = torch.zeros(2, 12, 12, dtype=torch.int64)
    inst[0, 1:6, 1:6], inst[0, 2:9, 7:11], inst[0, 8:12, 0:5] = 1, 2, 3
    inst[1, 3:10, 3:10] = 5
    f = 3 * torch.rand(2, 12, 12, generator=gen)
    return f, inst


def test_invariant_to_permuting_instance_ids():
    f, inst = _scene()
    perm = torch.tensor([0, 7, 3, 9, 4, 2])  # id k -> perm[k], background stays 0
    relabelled = perm[inst]
    for sampling, min_pair_loss in (("stratified", 0.0), ("random", 0.0), ("stratified", 1e-2), ("random", 1e-2)):
        kw = dict(sampling=sampling, window=7, center=1, dilation=2, num_pairs=500, min_pair_loss=min_pair_loss)
        a = dvis_loss(f, inst, generator=torch.Generator().manual_seed(3), **kw)
        b = dvis_loss(f, relabelled, generator=torch.Generator().manual_seed(3), **kw)
        for name in a:
            assert torch.allclose(a[name], b[name]), name


def test_no_instance_and_one_instance():
    f = torch.rand(1, 6, 6, requires_grad=True)
    empty = torch.zeros(1, 6, 6, dtype=torch.int64)
    terms = dvis_loss(f, empty, window=5, center=1, dilation=2)
    assert terms["pairwise"].item() == 0.0
    expected = huber(f.detach(), 0.1).mean()  # every pixel is background: pulled to 0
    assert terms["binary"].item() == pytest.approx(expected.item())
    terms["loss"].backward()
    assert torch.isfinite(f.grad).all()
    one = torch.zeros(1, 6, 6, dtype=torch.int64)
    one[0, 1:5, 1:5] = 4
    flat = torch.zeros(1, 6, 6)
    flat[0, 1:5, 1:5] = 2.0  # a plateau at m1: no binary, no pairwise loss
    terms = dvis_loss(flat, one, window=5, center=1, dilation=2)
    assert terms["binary"].item() == 0.0 and terms["pairwise"].item() == 0.0
    assert terms["quantization"].item() == 0.0


def test_ignore_pixels_take_no_part():
    f, inst = _scene()
    valid = torch.ones_like(inst, dtype=torch.bool)
    valid[0, 0:4, :] = False
    g = f.clone()
    g[~valid] = 17.0  # anything at ignored pixels
    for fn in (binary_loss, lambda *a: pairwise_loss(*a, window=7, center=1, dilation=2)):
        assert torch.allclose(fn(f, inst, valid), fn(g, inst, valid))
        assert not torch.allclose(fn(f, inst), fn(g, inst))


def test_empty_batch_item_contributes_zero():
    f, inst = _scene()
    valid = torch.ones_like(inst, dtype=torch.bool)
    valid[1] = False  # the second image is all ignore
    both = binary_loss(f, inst, valid)
    first = binary_loss(f[:1], inst[:1])
    assert both.item() == pytest.approx(first.item() / 2)
    pair = pairwise_loss(f, inst, valid, window=7, center=1, dilation=2)
    assert pair.item() == pytest.approx(pairwise_loss(f[:1], inst[:1], window=7, center=1, dilation=2).item() / 2)
    zero = dvis_loss(f[:0], inst[:0], window=7, center=1, dilation=2)
    assert all(v.item() == 0.0 for v in zero.values())


def test_stratified_offsets_count_and_symmetry():
    paper = stratified_offsets(129, 8, 8)
    # centre: 17 x 17 - 1 = 288; dilated grid: 17 x 17 multiples of 8, minus the 9 inside the centre = 280
    assert len(paper) == 568
    assert len(stratified_offsets(129, 8, 8, half=True)) == 284
    as_set = {tuple(o) for o in paper.tolist()}
    assert as_set == {(-a, -b) for a, b in as_set}
    assert (0, 0) not in as_set and paper.abs().max() == 64
    small = stratified_offsets(5, 1, 2)
    assert len(small) == 16  # 8 neighbours + the 8 non-zero points of the {-2,0,2}^2 grid
    half = {tuple(o) for o in stratified_offsets(5, 1, 2, half=True).tolist()}
    assert len(half) == 8 and all((-a, -b) not in half for a, b in half)
    assert len(stratified_offsets(3, 0, 1)) == 8  # dilation 1 covers the whole window


@pytest.mark.parametrize("kwargs, needle", [
    (dict(window=5, center=3), "does not fit"),
    (dict(window=3, center=8), "does not fit"),
    (dict(window=4, center=1), "odd"),
    (dict(window=5, center=1, dilation=0), "dilation"),
    (dict(window=5, center=-1), "center"),
])
def test_bad_sampling_parameters(kwargs, needle):
    with pytest.raises(LabkitError, match=needle):
        stratified_offsets(**{"dilation": 1, **kwargs})


def test_bad_parameters_and_inputs():
    f, inst = _scene()
    with pytest.raises(LabkitError, match="m1"):
        binary_loss(f, inst, m1=-2.0)
    with pytest.raises(LabkitError, match="m2"):
        pairwise_loss(f, inst, m2=-1.0)
    with pytest.raises(LabkitError, match="m2"):
        dvis_loss(f, inst, m2=0.0, pairwise_weight=0.0)
    with pytest.raises(LabkitError, match="sampling"):
        pairwise_loss(f, inst, sampling="grid")
    with pytest.raises(LabkitError, match="theta"):
        binary_loss(f, inst, theta=0.0)
    with pytest.raises(LabkitError, match="weight"):
        dvis_loss(f, inst, binary_weight=-1.0)
    with pytest.raises(DataError, match="integer"):
        binary_loss(f, inst.float())
    with pytest.raises(DataError, match="shape"):
        binary_loss(f, inst[:, :5])
    bad = f.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        dvis_loss(bad, inst)
    with pytest.raises(DataError, match="one channel"):
        dvis_loss(torch.rand(2, 2, 12, 12), inst)
