"""Tests of the discriminative loss (De Brabandere et al. 2017, Eq. 1-4)."""
import math

import pytest
import torch

from labkit.errors import DataError
from labkit.losses import DiscriminativeLoss, discriminative_loss


def _image(points, ids, classes=None):
    """One image of W = len(points) pixels in a row: embedding [1,D,1,W], instances [1,1,W]."""
    emb = torch.tensor(points, dtype=torch.float64).t().reshape(1, -1, 1, len(points))
    inst = torch.tensor(ids).reshape(1, 1, -1)
    sem = None if classes is None else torch.tensor(classes).reshape(1, 1, -1)
    return emb, inst, sem


# Instance 1: (0,0),(2,0) -> centre (1,0), both pixels 1 away.
# Instance 2: (1,1),(1,1) -> centre (1,1), both pixels on it.
# A background pixel and an ignored pixel far away must not count.
POINTS = [(0, 0), (2, 0), (1, 1), (1, 1), (50, 50), (-40, 7)]
IDS = [1, 1, 2, 2, 0, 2]
CLASSES = [1, 1, 1, 1, 0, 255]


def test_hand_computed_value():
    emb, inst, sem = _image(POINTS, IDS, CLASSES)
    out = discriminative_loss(emb, inst, sem)
    # var: instance 1: 2 x (1 - 0.5)^2 / 2 = 0.25; instance 2: 0 -> (0.25 + 0) / 2 = 0.125
    assert out["var"].item() == pytest.approx(0.125)
    # dist: ||(1,0)-(1,1)|| = 1 -> (2*1.5 - 1)^2 = 4 per ordered pair, 2 pairs / (C(C-1) = 2) = 4
    assert out["dist"].item() == pytest.approx(4.0)
    # reg: (||(1,0)|| + ||(1,1)||) / 2 = (1 + sqrt 2) / 2
    assert out["reg"].item() == pytest.approx((1 + math.sqrt(2)) / 2)
    # loss = 1 * 0.125 + 1 * 4 + 0.001 * 1.2071...
    assert out["loss"].item() == pytest.approx(4.125 + 0.001 * (1 + math.sqrt(2)) / 2)


def test_per_class_averages_terms_over_classes():
    # Add instance 3 of class 2: (5,5),(5,8) -> centre (5,6.5), pixels 1.5 away.
    emb, inst, sem = _image(POINTS + [(5, 5), (5, 8)], IDS + [3, 3], CLASSES + [2, 2])
    out = discriminative_loss(emb, inst, sem)
    # var: class 1 = 0.125 (above), class 2 = (1.5 - 0.5)^2 = 1 -> mean 0.5625
    assert out["var"].item() == pytest.approx(0.5625)
    # dist: class 1 = 4, class 2 has one cluster -> 0; mean 2
    assert out["dist"].item() == pytest.approx(2.0)
    # reg: class 1 = (1 + sqrt 2)/2, class 2 = ||(5, 6.5)|| = sqrt(67.25); mean of the two
    assert out["reg"].item() == pytest.approx(((1 + math.sqrt(2)) / 2 + math.sqrt(67.25)) / 2)


def test_instances_of_different_classes_do_not_push():
    emb, inst, _ = _image([(0, 0), (0.1, 0), (0, 0.1), (0.1, 0.1)], [1, 1, 2, 2])
    sem = torch.tensor([1, 1, 2, 2]).reshape(1, 1, -1)
    emb.requires_grad_(True)
    out = discriminative_loss(emb, inst, sem)
    assert out["dist"].item() == 0.0
    (grad,) = torch.autograd.grad(out["dist"], emb, allow_unused=True)
    assert grad is None or torch.count_nonzero(grad) == 0
    # The same pixels in one class are pushed apart; so they are without per_class.
    assert discriminative_loss(emb, inst, torch.ones_like(sem))["dist"].item() > 0
    assert discriminative_loss(emb, inst, sem, per_class=False)["dist"].item() > 0


def test_zero_loss_when_margins_are_met():
    # Pixels within delta_v = 0.5 of their centres; centres >= 2 * delta_d = 3 apart.
    pts = [(0, 0), (0.4, 0), (-0.4, 0), (3.2, 0), (3.2, 0.3), (3.2, -0.3), (0, 5), (0, 5)]
    emb, inst, _ = _image(pts, [1, 1, 1, 2, 2, 2, 3, 3])
    out = discriminative_loss(emb, inst, gamma=0.0)
    for key in ("var", "dist", "loss"):
        assert out[key].item() == 0.0


def test_invariant_to_permuting_instance_ids():
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 4, 6, 7, generator=gen, dtype=torch.float64)
    inst = torch.randint(0, 5, (2, 6, 7), generator=gen)
    sem = torch.randint(1, 3, (2, 6, 7), generator=gen)
    sem[inst == 0] = 0
    perm = torch.tensor([0, 17, 3, 250, 9])  # 0 stays background; positive ids shuffled
    ref = discriminative_loss(emb, inst, sem)
    out = discriminative_loss(emb, perm[inst], sem)
    for key in ref:
        assert out[key].item() == pytest.approx(ref[key].item(), rel=1e-12)


@pytest.mark.parametrize("with_semantic", [False, True])
def test_gradcheck(with_semantic):
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    inst = torch.tensor([[[1, 1, 2], [1, 2, 2], [0, 3, 3]], [[1, 1, 1], [0, 0, 2], [2, 2, 0]]])
    sem = torch.tensor([[[1, 1, 2], [1, 2, 2], [0, 1, 255]], [[1, 1, 1], [0, 0, 1], [1, 1, 0]]])
    sem = sem if with_semantic else None
    # Small margins keep some hinges active on both sides of their kinks.
    assert torch.autograd.gradcheck(
        lambda e: discriminative_loss(e, inst, sem, delta_v=0.2, delta_d=0.6)["loss"], (emb,)
    )


def _finite_with_grad(emb, inst, sem=None):
    emb = emb.clone().requires_grad_(True)
    out = discriminative_loss(emb, inst, sem)
    assert out["loss"].requires_grad
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert torch.isfinite(emb.grad).all()
    return out, emb.grad


def test_no_instance_gives_zero_loss_attached_to_graph():
    out, grad = _finite_with_grad(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    assert out["loss"].item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_one_instance_has_no_distance_term():
    inst = torch.zeros(1, 4, 4, dtype=torch.long)
    inst[0, 1:3, 1:3] = 7
    out, _ = _finite_with_grad(torch.randn(1, 3, 4, 4), inst)
    assert out["dist"].item() == 0.0
    assert out["var"].item() > 0.0


def test_single_pixel_instances_and_identical_centres_have_finite_grads():
    # Zero distances everywhere: the norm's gradient at 0 must not produce NaN.
    inst = torch.tensor([[[1, 2, 3]]])
    out, _ = _finite_with_grad(torch.zeros(1, 2, 1, 3), inst)
    # 3 clusters at the same point: every ordered pair pays (2 * 1.5)^2 = 9 -> dist 9.
    assert out["dist"].item() == pytest.approx(9.0)


def test_ignored_pixels_take_no_part():
    gen = torch.Generator().manual_seed(2)
    emb = torch.randn(1, 3, 5, 5, generator=gen)
    inst = torch.randint(1, 4, (1, 5, 5), generator=gen)
    sem = torch.ones_like(inst)
    sem[0, 0, :] = 255
    ref = discriminative_loss(emb, inst, sem)
    wild = emb.clone()
    wild[0, :, 0, :] = 1e3
    out, grad = _finite_with_grad(wild, inst, sem)
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-6)
    assert torch.count_nonzero(grad[0, :, 0, :]) == 0


def test_empty_batch_item_contributes_zero_to_the_batch_mean():
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(2, 3, 4, 4, generator=gen)
    inst = torch.randint(0, 3, (2, 4, 4), generator=gen)
    inst[1] = 0
    out, grad = _finite_with_grad(emb, inst)
    alone = discriminative_loss(emb[:1], inst[:1])
    assert out["loss"].item() == pytest.approx(alone["loss"].item() / 2)
    assert torch.count_nonzero(grad[1]) == 0


def test_module_matches_function_and_uses_its_options():
    gen = torch.Generator().manual_seed(4)
    emb = torch.randn(1, 3, 4, 4, generator=gen)
    inst = torch.randint(0, 3, (1, 4, 4), generator=gen)
    module = DiscriminativeLoss(delta_v=0.1, gamma=0.5)
    assert module(emb, inst)["loss"].item() == discriminative_loss(emb, inst, delta_v=0.1, gamma=0.5)["loss"].item()


def test_bad_shapes_raise_data_error():
    with pytest.raises(DataError, match="instances shape"):
        discriminative_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(DataError, match=r"\[B,D,H,W\]"):
        discriminative_loss(torch.zeros(2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
