"""Tests of the Kong & Fowlkes pairwise loss (Eq. 1-2) and its recurrent accumulation (Sec. 4.2)."""
import pytest
import torch

from labkit.errors import DataError
from labkit.losses import (
    PairwiseEmbeddingLoss,
    RecurrentGroupingLoss,
    pair_loss,
    pairwise_embedding_loss,
    recurrent_grouping_loss,
    sample_pixels,
)

# Instance 1: a1 = (1,0), a2 = (0,1); instance 2: b = (-1,0).
X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
IDS = torch.tensor([1, 1, 2])


def test_hand_computed_value():
    out = pair_loss(X, IDS, alpha=0.25)
    # Q = 2 instances, n_1 = 2, n_2 = 1, so w_a = 1/2, w_b = 1 and sum_ij w_i w_j = Q^2 = 4.
    # pos: instance 1 pairs (a1,a2),(a2,a1): cos 0 -> s 0.5 -> 1 - s = 0.5 each; the
    #      self-pairs cost 0.  (1/2)(1/2)(0.5 + 0.5) = 0.25; instance 2 (b,b) = 0.  0.25 / 4 = 0.0625
    assert out["pos"].item() == pytest.approx(0.0625)
    # neg: (a1,b): s = 0 -> 0; (a2,b): s = 0.5 -> [0.5 - 0.25]_+ = 0.25, weight (1/2)(1), twice
    #      (both orders) -> 0.25.  0.25 / 4 = 0.0625
    assert out["neg"].item() == pytest.approx(0.0625)
    assert out["loss"].item() == pytest.approx(0.125)


def test_cosine_is_scale_invariant():
    scaled = X * torch.tensor([[3.0], [0.5], [7.0]], dtype=torch.float64)
    assert pair_loss(scaled, IDS, alpha=0.25)["loss"].item() == pytest.approx(0.125)


def test_loss_does_not_depend_on_sample_size():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 4, (12,), generator=gen)
    once = pair_loss(x, ids)["loss"].item()
    twice = pair_loss(torch.cat([x, x]), torch.cat([ids, ids]))["loss"].item()
    assert twice == pytest.approx(once, rel=1e-12)


def test_zero_loss_for_antipodal_pairs_on_orthogonal_axes():
    # Sec. 3.2: 2D instances placed antipodally along D orthogonal axes have s in {0, 0.5} <= alpha = 0.5.
    centres = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.float64)
    ids = torch.tensor([1, 1, 2, 3, 3, 4])
    out = pair_loss(centres[ids - 1], ids, alpha=0.5)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-12)
    assert pair_loss(centres[ids - 1], ids, alpha=0.4)["loss"].item() > 0


@pytest.mark.parametrize("weighting", ["paper", "balanced"])
def test_invariant_to_permuting_instance_ids(weighting):
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 3, 5, 6, generator=gen)
    inst = torch.randint(0, 5, (2, 5, 6), generator=gen)
    perm = torch.tensor([0, 42, 7, 3, 1000])
    kw = dict(max_pixels=20, weighting=weighting)
    ref = pairwise_embedding_loss(emb, inst, generator=torch.Generator().manual_seed(5), **kw)
    out = pairwise_embedding_loss(emb, perm[inst], generator=torch.Generator().manual_seed(5), **kw)
    for key in ref:
        assert out[key].item() == pytest.approx(ref[key].item(), rel=1e-6)


def test_gradcheck_pair_loss():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 1, 1, 2, 2, 2, 0])
    assert torch.autograd.gradcheck(lambda x: pair_loss(x, ids, alpha=0.3)["loss"], (x,))


def test_gradcheck_recurrent_loss_through_blurring_iterations():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([1, 1, 2, 2, 3, 3])

    def loss(x):
        # Two Gaussian-blurring steps (Eq. 3 with eta = 1), only to get differentiable iterates.
        iterates = [x]
        for _ in range(2):
            k = torch.exp(2.0 * iterates[-1] @ iterates[-1].t())
            iterates.append(k @ iterates[-1] / k.sum(dim=1, keepdim=True))
        return recurrent_grouping_loss(iterates, ids, alpha=0.3)["loss"]

    assert torch.autograd.gradcheck(loss, (x,))


def _finite_with_grad(emb, inst, **kw):
    emb = emb.clone().requires_grad_(True)
    out = pairwise_embedding_loss(emb, inst, **kw)
    assert out["loss"].requires_grad
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert torch.isfinite(emb.grad).all()
    return out, emb.grad


def test_background_only_image():
    emb = torch.nn.functional.normalize(torch.randn(1, 3, 4, 4), dim=1)
    bg = torch.zeros(1, 4, 4, dtype=torch.long)
    # Background is one group: only positive pairs, no push.
    out, _ = _finite_with_grad(emb, bg)
    assert out["neg"].item() == 0.0
    assert out["pos"].item() > 0.0
    # Without background nothing is sampled: zero loss, zero gradient.
    out, grad = _finite_with_grad(emb, bg, include_background=False)
    assert out["loss"].item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_one_instance_without_background_has_no_negative_term():
    inst = torch.full((1, 3, 3), 4)
    out, _ = _finite_with_grad(torch.randn(1, 2, 3, 3), inst, include_background=False)
    assert out["neg"].item() == 0.0


def test_ignored_pixels_take_no_part():
    gen = torch.Generator().manual_seed(4)
    emb = torch.randn(1, 3, 4, 4, generator=gen)
    inst = torch.randint(0, 3, (1, 4, 4), generator=gen)
    ignore = torch.zeros(1, 4, 4, dtype=torch.bool)
    ignore[0, 0] = True
    ref = pairwise_embedding_loss(emb, inst, ignore_mask=ignore)
    wild = emb.clone()
    wild[0, :, 0] = torch.randn(3, 4, generator=gen)
    out, grad = _finite_with_grad(wild, inst, ignore_mask=ignore)
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-6)
    assert torch.count_nonzero(grad[0, :, 0]) == 0


def test_empty_batch_item_contributes_zero_to_the_batch_mean():
    gen = torch.Generator().manual_seed(5)
    emb = torch.randn(2, 3, 4, 4, generator=gen)
    inst = torch.randint(0, 3, (2, 4, 4), generator=gen)
    ignore = torch.zeros(2, 4, 4, dtype=torch.bool)
    ignore[1] = True
    out, grad = _finite_with_grad(emb, inst, ignore_mask=ignore)
    alone = pairwise_embedding_loss(emb[:1], inst[:1])
    assert out["loss"].item() == pytest.approx(alone["loss"].item() / 2)
    assert torch.count_nonzero(grad[1]) == 0


def test_sampling_respects_cap_and_is_deterministic_with_a_generator():
    gen = torch.Generator().manual_seed(6)
    emb = torch.randn(2, 3, 10, 10, generator=gen)
    inst = torch.randint(0, 4, (2, 10, 10), generator=gen)
    ignore = inst == 3

    def draw(seed):
        return sample_pixels(emb, inst, max_pixels=30, ignore_mask=ignore, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(0), draw(0), draw(1)
    for b, s in enumerate(first):
        assert s.embedding.shape == (30, 3) and s.ids.shape == (30,)
        assert s.index.unique().numel() == 30
        assert not ignore[b].reshape(-1)[s.index].any()
        assert torch.equal(s.ids, inst[b].reshape(-1)[s.index])
        assert torch.equal(s.embedding, emb[b].reshape(3, -1)[:, s.index].t())
        assert torch.equal(s.index, again[b].index)
    assert not torch.equal(first[0].index, other[0].index)
    # Below the cap every usable pixel is kept.
    everything = sample_pixels(emb, inst, max_pixels=1000, ignore_mask=ignore)
    assert [s.index.numel() for s in everything] == [int((~ignore[b]).sum()) for b in range(2)]


def test_recurrent_loss_accumulates_over_loops():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, 3, generator=gen)
    ids = torch.randint(0, 3, (2, 8), generator=gen)
    single = (pair_loss(x[0], ids[0])["loss"] + pair_loss(x[1], ids[1])["loss"]) / 2
    summed = recurrent_grouping_loss([x, x, x], ids)
    assert summed["loss"].item() == pytest.approx(3 * single.item())
    assert summed["loss_t2"].item() == pytest.approx(single.item())
    assert summed["pos"].item() + summed["neg"].item() == pytest.approx(summed["loss"].item())
    mean = recurrent_grouping_loss([x, x, x], ids, reduction="mean")
    assert mean["loss"].item() == pytest.approx(single.item())
    # Unbatched [N, D] iterates with [N] ids.
    assert recurrent_grouping_loss([x[0]], ids[0])["loss"].item() == pytest.approx(
        pair_loss(x[0], ids[0])["loss"].item()
    )


def test_modules_match_functions():
    gen = torch.Generator().manual_seed(8)
    emb = torch.randn(1, 3, 5, 5, generator=gen)
    inst = torch.randint(0, 3, (1, 5, 5), generator=gen)
    module = PairwiseEmbeddingLoss(alpha=0.3, max_pixels=10)
    got = module(emb, inst, generator=torch.Generator().manual_seed(0))["loss"]
    want = pairwise_embedding_loss(emb, inst, alpha=0.3, max_pixels=10, generator=torch.Generator().manual_seed(0))
    assert got.item() == want["loss"].item()
    x, ids = emb[0].reshape(3, -1).t(), inst.reshape(-1)
    assert RecurrentGroupingLoss(alpha=0.3, reduction="mean")([x, x], ids)["loss"].item() == pytest.approx(
        pair_loss(x, ids, alpha=0.3)["loss"].item()
    )


def test_bad_input_raises_data_error():
    with pytest.raises(DataError, match="instances shape"):
        pairwise_embedding_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(DataError, match="iterate 0"):
        recurrent_grouping_loss([torch.zeros(5, 2)], torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="reduction"):
        recurrent_grouping_loss([torch.zeros(5, 2)], torch.zeros(5, dtype=torch.long), reduction="max")


# ``weighting="balanced"``: positive term over the Q same-instance blocks, negative over the Q (Q - 1) ordered
# pairs of different instances (Eq. 2's single normalisation Q^2 weighs the positives 1 / (Q - 1) of the negatives).
# Instance 1: a1 = (1,0), a2 = (0,1); instance 2: b = (-1,0); instance 3: c = (0,-1).
X3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
IDS3 = torch.tensor([1, 1, 2, 3])


def test_balanced_hand_computed_value():
    # pos: instance 1's mean (1/2, 1/2) has |m|^2 = 1/2 -> (1 - 1/2) / 2 = 0.25; instances 2, 3 alone cost 0.
    # neg, alpha = 0.25, s = (1 + cos) / 2, hinge [s - 0.25]_+ weighted w_i w_j (w_a = 1/2, w_b = w_c = 1):
    #   (a1,b) cos -1 -> 0; (a2,b) cos 0 -> 0.25 x 1/2; (a1,c) cos 0 -> 0.25 x 1/2; (a2,c) cos -1 -> 0;
    #   (b,c) cos 0 -> 0.25 x 1.  Unordered 0.5, ordered 1.0.
    paper = pair_loss(X3, IDS3, alpha=0.25)
    assert paper["pos"].item() == pytest.approx(0.25 / 9)
    assert paper["neg"].item() == pytest.approx(1.0 / 9)
    balanced = pair_loss(X3, IDS3, alpha=0.25, weighting="balanced")
    assert balanced["pos"].item() == pytest.approx(0.25 / 3)
    assert balanced["neg"].item() == pytest.approx(1.0 / 6)
    assert balanced["loss"].item() == pytest.approx(0.25)
    # Two instances (the first hand example): pos 0.25 / 2, neg 0.25 / 2.
    two = pair_loss(X, IDS, alpha=0.25, weighting="balanced")
    assert two["pos"].item() == pytest.approx(0.125)
    assert two["neg"].item() == pytest.approx(0.125)


def test_balanced_weighting_scales_the_paper_terms_by_q_and_q_over_q_minus_1():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 5, (40,), generator=gen)
    q = ids.unique().numel()
    paper, balanced = pair_loss(x, ids), pair_loss(x, ids, weighting="balanced")
    assert balanced["pos"].item() == pytest.approx(paper["pos"].item() * q, rel=1e-12)
    assert balanced["neg"].item() == pytest.approx(paper["neg"].item() * q / (q - 1), rel=1e-12)
    # Still independent of how many pixels were sampled.
    twice = pair_loss(torch.cat([x, x]), torch.cat([ids, ids]), weighting="balanced")
    assert twice["loss"].item() == pytest.approx(balanced["loss"].item(), rel=1e-12)


def test_gradcheck_balanced_pair_loss_and_recurrent_loss():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 1, 1, 2, 2, 2, 0])
    assert torch.autograd.gradcheck(lambda x: pair_loss(x, ids, alpha=0.3, weighting="balanced")["loss"], (x,))

    def loss(x):
        k = torch.exp(2.0 * x @ x.t())
        return recurrent_grouping_loss([x, k @ x / k.sum(dim=1, keepdim=True)], ids, alpha=0.3,
                                       weighting="balanced")["loss"]

    assert torch.autograd.gradcheck(loss, (x,))


def test_balanced_edge_cases_one_group_and_empty():
    emb = torch.nn.functional.normalize(torch.randn(1, 3, 4, 4), dim=1)
    bg = torch.zeros(1, 4, 4, dtype=torch.long)
    out, _ = _finite_with_grad(emb, bg, weighting="balanced")  # Q = 1: no negative pairs, no division by zero
    assert out["neg"].item() == 0.0
    assert out["pos"].item() == pytest.approx(pairwise_embedding_loss(emb, bg)["pos"].item())  # Q = 1: same
    out, grad = _finite_with_grad(emb, bg, include_background=False, weighting="balanced")
    assert out["loss"].item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_balanced_modules_match_functions_and_unknown_weighting_raises():
    gen = torch.Generator().manual_seed(12)
    emb = torch.randn(1, 3, 5, 5, generator=gen)
    inst = torch.randint(0, 3, (1, 5, 5), generator=gen)
    module = PairwiseEmbeddingLoss(max_pixels=10, weighting="balanced")
    got = module(emb, inst, generator=torch.Generator().manual_seed(0))
    want = pairwise_embedding_loss(emb, inst, max_pixels=10, weighting="balanced",
                                   generator=torch.Generator().manual_seed(0))
    assert got["loss"].item() == want["loss"].item()
    x, ids = emb[0].reshape(3, -1).t(), inst.reshape(-1)
    assert RecurrentGroupingLoss(weighting="balanced")([x], ids)["loss"].item() == pytest.approx(
        pair_loss(x, ids, weighting="balanced")["loss"].item()
    )
    with pytest.raises(DataError, match="weighting"):
        pair_loss(x, ids, weighting="mean")
