"""HLE loss (Kerola et al. 2021, Eq. 7-16): hand-computed value, gradcheck of every term, ids, edge cases."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labkit.errors import LabkitError
from labkit.losses.hle import HLELoss, hle_loss, instance_kernel, pixel_grid

TERMS = ("seg", "seg_mean", "ins", "ins_var", "seed")


def scene(dtype=torch.float64, seed=0):
    """One 4x5 image: two things (ids 3, 7; class 1) on stuff (class 2); one ignored pixel; K = 3, D = 3."""
    gen = torch.Generator().manual_seed(seed)
    inst = torch.zeros(1, 4, 5, dtype=torch.int64)
    inst[0, :2, :2] = 3
    inst[0, 2:, 3:] = 7
    sem = torch.full_like(inst, 2)
    sem[inst > 0] = 1
    sem[0, 0, 4] = 255
    emb = F.normalize(torch.randn(1, 3, 4, 5, generator=gen, dtype=dtype), dim=1)
    sigma = torch.stack([0.4 + 0.2 * torch.rand(4, 5, generator=gen, dtype=dtype),
                         2.0 + torch.rand(4, 5, generator=gen, dtype=dtype)])[None]
    seed_map = torch.rand(1, 1, 4, 5, generator=gen, dtype=dtype)
    logits = torch.randn(1, 3, 4, 5, generator=gen, dtype=dtype)
    means = torch.randn(3, 3, generator=gen, dtype=dtype)
    return emb, sigma, seed_map, logits, means, inst, sem


def test_hand_computed_one_instance() -> None:
    # 1x2 image, both pixels instance 1 (class 1) with the same embedding: mu = e, rho = (0, 0.5)
    e = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 1, 2).clone()
    sigma = torch.tensor([0.5, 1.0]).reshape(1, 2, 1, 1).expand(1, 2, 1, 2).clone()
    seed = torch.full((1, 1, 1, 2), 0.3)
    logits = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1).expand(1, 2, 1, 2).clone()
    means = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    inst = torch.ones(1, 1, 2, dtype=torch.int64)
    terms = hle_loss(e, sigma, seed, logits, means, inst, inst.clone())
    phi = math.exp(-0.25 / 2)  # cosine distance 0, squared spatial distance 0.25, sigma_sp 1
    assert terms["ins"].item() == pytest.approx(1 - phi, abs=1e-6)  # all positive: errors 1 - phi, g = 1/2, 1/2
    assert terms["seed"].item() == pytest.approx((0.3 - phi) ** 2, abs=1e-6)
    assert terms["ins_var"].item() == pytest.approx(0.0)
    p1 = math.exp(1) / (1 + math.exp(1))
    # Lovász-softmax over both classes: class 0 absent, max error p0; class 1 all positive, error 1 - p1
    assert terms["seg"].item() == pytest.approx(((1 - p1) + (1 - p1)) / 2, abs=1e-6)
    assert terms["seg_mean"].item() == pytest.approx(0.0, abs=1e-12)  # class 1 mean already e
    assert terms["loss"].item() == pytest.approx(sum(terms[k].item() for k in TERMS), abs=1e-6)


def test_seed_weight_scales_eq_13_on_instance_pixels_only() -> None:
    # 1x2 image: pixel 0 is instance 1 alone (phi = 1 at its own centre), pixel 1 background; seeds 0.3
    e = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 1, 2).clone()
    sigma = torch.tensor([0.5, 1.0]).reshape(1, 2, 1, 1).expand(1, 2, 1, 2).clone()
    seed = torch.full((1, 1, 1, 2), 0.3)
    logits = torch.zeros(1, 2, 1, 2)
    means = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    inst = torch.tensor([[[1, 0]]])
    for weight in (1.0, 10.0):
        terms = hle_loss(e, sigma, seed, logits, means, inst, inst.clone(), seed_weight=weight)
        assert terms["seed"].item() == pytest.approx((weight * 0.7**2 + 0.3**2) / 2, abs=1e-6)
    with pytest.raises(LabkitError, match="seed_weight"):
        hle_loss(e, sigma, seed, logits, means, inst, inst.clone(), seed_weight=-1.0)


def test_kernel_is_eq_7_times_eq_8() -> None:
    e = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=0)  # two pixels, D = 2
    coords = torch.tensor([[0.0, 3.0], [0.0, 4.0]])
    mu, center = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    phi = instance_kernel(e, coords, mu, center, torch.tensor(0.5), torch.tensor(5.0))
    d = 1 - 1 / math.sqrt(2)
    assert phi.tolist() == pytest.approx([1.0, math.exp(-d / 0.5) * math.exp(-25 / 50)])
    assert pixel_grid(2, 3)[:, 4].tolist() == [1.0, 1.0]
    # several instances at once: one row each, as one at a time
    mus = torch.stack([mu, F.normalize(torch.tensor([1.0, 2.0]), dim=0)])
    centers = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    sigmas, spatial = torch.tensor([0.5, 0.8]), torch.tensor([5.0, 2.0])
    rows = instance_kernel(e, coords, mus, centers, sigmas, spatial)
    for r in range(2):
        one = instance_kernel(e, coords, mus[r], centers[r], sigmas[r], spatial[r])
        assert rows[r].tolist() == pytest.approx(one.tolist())


# The inputs each term is differentiated with respect to.  Terms with a stop-gradient (Eq. 13's
# sg[phi], Eq. 15's sg[mu_batch]) are checked with respect to the non-detached side only: a finite
# difference would also move the detached target, which autograd rightly ignores.
WRT = {"seg": (3,), "seg_mean": (4,), "ins": (0, 1), "ins_var": (1,), "seed": (2,)}


@pytest.mark.parametrize("term", TERMS)
def test_gradcheck_of_every_term_float64(term: str) -> None:
    emb, sigma, seed, logits, means, inst, sem = scene()
    base = [emb, sigma.log(), seed, logits, means]
    wrt = WRT[term]

    def f(*free):
        args = list(base)
        for i, t in zip(wrt, free):
            args[i] = t
        raw_emb, raw_sigma, seed_map, lg, mu = args
        return hle_loss(F.normalize(raw_emb, dim=1), raw_sigma.exp(), seed_map, lg, mu, inst, sem)[term]

    inputs = tuple(base[i].clone().requires_grad_(True) for i in wrt)
    assert torch.autograd.gradcheck(f, inputs, atol=1e-6)


def test_stop_gradients() -> None:
    """Eq. 13 and 15: no gradient reaches the embedding through the seed or class-mean targets."""
    emb, sigma, seed, logits, means, inst, sem = scene()
    e = emb.clone().requires_grad_(True)
    out = hle_loss(e, sigma, seed, logits, means, inst, sem)
    (grad,) = torch.autograd.grad(out["seed"] + out["seg_mean"] + 0 * e.sum(), e)
    assert bool((grad == 0).all())
    (grad,) = torch.autograd.grad(out["ins"], e)  # whereas the instance term does move the embedding
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("options", [dict(instance_loss="cross_entropy", semantic_loss="cross_entropy"),
                                     dict(lovasz_classes="present")])
def test_gradcheck_of_the_ablation_variants(options) -> None:
    emb, sigma, seed, logits, means, inst, sem = scene(seed=1)

    def f(e, lg):
        out = hle_loss(F.normalize(e, dim=1), sigma, seed, lg, means, inst, sem, **options)
        return out["ins"] + out["seg"]

    assert torch.autograd.gradcheck(f, (emb.clone().requires_grad_(True), logits.clone().requires_grad_(True)))


def test_invariant_to_permuting_instance_ids() -> None:
    emb, sigma, seed, logits, means, inst, sem = scene(torch.float32)
    ref = hle_loss(emb, sigma, seed, logits, means, inst, sem)
    perm = inst.clone()
    perm[inst == 3], perm[inst == 7] = 11, 2
    other = hle_loss(emb, sigma, seed, logits, means, perm, sem)
    for k in ref:
        assert other[k].item() == pytest.approx(ref[k].item(), rel=1e-6)


def test_edge_cases_stuff_only_one_instance_ignore_and_empty_items() -> None:
    emb, sigma, seed, logits, means, inst, sem = scene(torch.float32)
    # only stuff: no instance term, seeds regress to 0
    stuff = hle_loss(emb, sigma, seed, logits, means, torch.zeros_like(inst), torch.full_like(sem, 2))
    assert stuff["ins"].item() == 0.0 and stuff["ins_var"].item() == 0.0
    assert stuff["seed"].item() == pytest.approx((seed ** 2).mean().item(), rel=1e-6)
    # only things (every pixel in an instance)
    things = torch.ones_like(inst)
    out = hle_loss(emb, sigma, seed, logits, means, things, things.clone())
    assert all(torch.isfinite(v) for v in out.values()) and out["ins"].item() > 0
    # ignore pixels take no part: changing what lies under them changes nothing
    ignored = sem.clone()
    ignored[0, 3, 0] = 255
    a = hle_loss(emb, sigma, seed, logits, means, inst, ignored)
    emb2 = emb.clone()
    emb2[0, :, 3, 0] = torch.tensor([0.0, 0.0, 1.0])
    seed2 = seed.clone()
    seed2[0, 0, 3, 0] = 0.99
    b = hle_loss(emb2, sigma, seed2, logits, means, inst, ignored)
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-6)
    # a batch with one fully ignored image equals the other image alone (every term is a mean)
    both = hle_loss(torch.cat([emb, emb]), torch.cat([sigma, sigma]), torch.cat([seed, seed]),
                    torch.cat([logits, logits]), means, torch.cat([inst, inst]),
                    torch.cat([sem, torch.full_like(sem, 255)]))
    alone = hle_loss(emb, sigma, seed, logits, means, inst, sem)
    for k in alone:
        assert both[k].item() == pytest.approx(alone[k].item(), rel=1e-5)
    # everything ignored: zero, still differentiable
    e = emb.clone().requires_grad_(True)
    nothing = hle_loss(e, sigma, seed, logits, means, inst, torch.full_like(sem, 255))
    nothing["loss"].backward()
    assert nothing["loss"].item() == 0.0 and e.grad is not None


def test_lovasz_beats_nothing_when_the_embedding_is_perfect() -> None:
    """At a perfect embedding (one point per instance, far apart) the instance term is near zero."""
    emb, sigma, seed, logits, means, inst, sem = scene(torch.float32)
    perfect = torch.zeros_like(emb)
    perfect[0, 0][inst[0] == 3] = 1
    perfect[0, 1][inst[0] == 7] = 1
    perfect[0, 2][inst[0] == 0] = 1
    tight = torch.stack([torch.full((4, 5), 0.2), torch.full((4, 5), 50.0)])[None]
    good = hle_loss(perfect, tight, seed, logits, means, inst, sem)["ins"].item()
    bad = hle_loss(emb, sigma, seed, logits, means, inst, sem)["ins"].item()
    assert good < 0.01 < bad


def test_class_mean_term_and_weights() -> None:
    emb, sigma, seed, logits, means, inst, sem = scene(torch.float32)
    out = hle_loss(emb, sigma, seed, logits, means, inst, sem)
    keep = sem[0] != 255
    expected = []
    for k in (1, 2):
        batch_mean = F.normalize(emb[0][:, keep & (sem[0] == k)].mean(dim=1), dim=0)
        expected.append(((means[k] - batch_mean) ** 2).sum())
    assert out["seg_mean"].item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    off = hle_loss(emb, sigma, seed, logits, means, inst, sem, class_mean_weight=0.0)
    assert off["seg_mean"].item() == 0.0
    module = HLELoss(gamma=0.0)(emb, sigma, seed, logits, means, inst, sem)
    assert module["ins_var"].item() == 0.0


def test_without_instance_terms_only_the_semantic_part_remains() -> None:
    emb, sigma, seed, logits, means, inst, sem = scene()
    emb.requires_grad_()
    logits.requires_grad_()
    full = hle_loss(emb, sigma, seed, logits, means, inst, sem)
    semantic = hle_loss(emb, sigma, seed, logits, means, inst, sem, instance_terms=False)
    assert semantic["ins"].item() == semantic["ins_var"].item() == semantic["seed"].item() == 0.0
    for name in ("seg", "seg_mean"):
        assert semantic[name].item() == pytest.approx(full[name].item())
    assert semantic["loss"].item() == pytest.approx((full["seg"] + full["seg_mean"]).item())
    semantic["loss"].backward()
    assert not emb.grad.any()  # Eq. 15 detaches the embedding; in the model, psi's logits carry Eq. 12 back to it
    assert logits.grad.abs().sum() > 0


def test_bad_input_raises() -> None:
    emb, sigma, seed, logits, means, inst, sem = scene(torch.float32)
    with pytest.raises(LabkitError, match="embedding"):
        hle_loss(emb[0], sigma, seed, logits, means, inst, sem)
    with pytest.raises(LabkitError, match="sigma"):
        hle_loss(emb, sigma[:, :1], seed, logits, means, inst, sem)
    with pytest.raises(LabkitError, match="integer"):
        hle_loss(emb, sigma, seed, logits, means, inst.float(), sem)
    with pytest.raises(LabkitError, match="NaN"):
        hle_loss(emb * float("nan"), sigma, seed, logits, means, inst, sem)
    with pytest.raises(LabkitError, match="positive"):
        hle_loss(emb, -sigma, seed, logits, means, inst, sem)
    with pytest.raises(LabkitError, match="0..2"):
        hle_loss(emb, sigma, seed, logits, means, inst, sem * 2)
    with pytest.raises(LabkitError, match="class means"):
        hle_loss(emb, sigma, seed, logits, means[:2], inst, sem)
    with pytest.raises(LabkitError, match="instance_loss"):
        hle_loss(emb, sigma, seed, logits, means, inst, sem, instance_loss="hinge")
