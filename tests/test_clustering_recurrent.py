"""Kong & Fowlkes's recurrent mean shift (Eq. 3): values, gradients, convergence."""
import pytest
import torch
import torch.nn.functional as F

from labkit.clustering import RecurrentMeanShift, delta_from_margin, recurrent_mean_shift
from labkit.errors import DataError
from labkit.losses.recurrent import recurrent_grouping_loss


def clusters_on_sphere(k=3, per=20, dim=4, noise=0.05, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(dim, dtype=dtype)[:k]
    x = centers.repeat_interleave(per, 0) + noise * torch.randn(k * per, dim, generator=g, dtype=dtype)
    return F.normalize(x, dim=1), torch.arange(k).repeat_interleave(per)


def test_one_step_is_equation_3():
    """Eq. 3 with K = exp(delta^2 X^T X) (concentration delta^2, Sec. 4.1); normalize re-projects afterwards."""
    x = F.normalize(torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=1)
    delta, eta = 2.0, 0.7
    X = x.T  # the paper's D x N layout
    K = torch.exp(delta**2 * X.T @ X)
    D = torch.diag(K.T @ torch.ones(7, dtype=torch.float64))
    expected = X @ (eta * K @ torch.linalg.inv(D) + (1 - eta) * torch.eye(7, dtype=torch.float64))
    out = recurrent_mean_shift(x, iterations=1, eta=eta, delta=delta, normalize=False)
    assert len(out) == 2 and out[0] is x
    torch.testing.assert_close(out[1], expected.T)
    assert float(out[1].norm(dim=1).max()) < 0.999  # Eq. 3 verbatim leaves the sphere
    projected = recurrent_mean_shift(x, iterations=1, eta=eta, delta=delta)[1]  # default: re-projected
    torch.testing.assert_close(projected, F.normalize(expected.T, dim=1))


def test_kernel_std_is_one_over_delta():
    """On the sphere the vMF weights exp(delta^2 x.y) are the paper's Gaussian exp(-delta^2/2 |x-y|^2), std 1/delta."""
    x = F.normalize(torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=1)
    delta = 3.0
    gauss = torch.exp(-(delta**2) / 2 * torch.cdist(x, x) ** 2)
    expected = (gauss / gauss.sum(1, keepdim=True)) @ x
    torch.testing.assert_close(recurrent_mean_shift(x, iterations=1, delta=delta, normalize=False)[1], expected)
    assert RecurrentMeanShift(alpha=0.5).concentration == pytest.approx(36.0)
    with pytest.raises(DataError, match="delta"):
        recurrent_mean_shift(x, delta=0.0)


def orthogonal_groups(sizes=(1200, 300, 100, 30), dim=64, noise=0.034, seed=0):
    """The review's case: groups on orthogonal axes, intra-group cosine about 0.93 in 64 dims."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    return F.normalize(torch.eye(dim)[ids] + noise * torch.randn(len(ids), dim, generator=g), dim=1), ids


def count_modes(x: torch.Tensor, cos: float = 0.9) -> int:
    """Number of groups of points pairwise-linked at cosine > cos (connected components)."""
    adjacency = (x @ x.t()) > cos
    label = torch.arange(len(x))
    for _ in range(len(x)):
        new = torch.where(adjacency, label[None, :], len(x)).min(dim=1).values
        if torch.equal(new, label):
            break
        label = new
    return int(label.unique().numel())


def test_separated_groups_keep_their_modes_and_eq2_falls_through_the_loops():
    """Groups that Eq. 2 scores as separated stay separate through the decoding loops (issue 15)."""
    x, ids = orthogonal_groups()
    u = x[ids == 0]
    assert 0.9 < float((u @ u.t()).mean()) < 0.96
    iterates = RecurrentMeanShift(alpha=0.5, iterations=10)(x)  # defaults: delta = 6, concentration 36, re-projected
    losses = [float(v) for k, v in recurrent_grouping_loss(iterates, ids).items() if k.startswith("loss_t")]
    assert losses[0] < 0.02  # Eq. 2 (margin 0.5) already scores the groups as nearly separated
    assert all(later <= earlier + 1e-6 for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < 0.2 * losses[0]
    assert [count_modes(t) for t in iterates] == [4] * 11
    for k in range(4):  # each group collapsed onto its own axis
        assert float((iterates[-1][ids == k] @ torch.eye(64)[k]).min()) > 0.99
    # the literal reading (concentration delta = 6, Eq. 3 without re-projection) merges them and raises Eq. 2
    literal = RecurrentMeanShift(alpha=0.5, iterations=10, delta=6**0.5, normalize=False)(x)
    literal_losses = recurrent_grouping_loss(literal, ids)
    assert count_modes(F.normalize(literal[-1], dim=1)) < 4
    assert float(literal_losses["loss_t3"]) > 5 * losses[0]


def test_delta_tied_to_margin():
    assert delta_from_margin(0.5) == pytest.approx(6.0)
    assert RecurrentMeanShift(alpha=0.7).delta == pytest.approx(10.0)
    with pytest.raises(DataError):
        delta_from_margin(1.0)


def test_collapses_separated_clusters_to_k_points():
    x, ids = clusters_on_sphere(k=3)
    iterates = RecurrentMeanShift(alpha=0.5, iterations=10)(x)
    assert torch.allclose(iterates[-1].norm(dim=1), torch.ones(len(x), dtype=x.dtype))
    assert len(iterates) == 11
    final = iterates[-1]
    for k in range(3):
        members = final[ids == k]
        assert (members - members.mean(0)).norm(dim=1).max() < 1e-3
    means = torch.stack([final[ids == k].mean(0) for k in range(3)])
    assert torch.cdist(means, means).masked_fill(torch.eye(3, dtype=torch.bool), 9).min() > 0.5


def test_gradcheck():
    x, _ = clusters_on_sphere(k=2, per=3, dim=3, noise=0.3, seed=1)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: recurrent_mean_shift(t, iterations=3, eta=0.8, delta=2.0, normalize=False)[-1], (x,)
    )
    assert torch.autograd.gradcheck(lambda t: recurrent_mean_shift(t, iterations=2, normalize=True)[-1], (x,))
    euclidean = (2 * x).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: recurrent_mean_shift(t, iterations=2, delta=1.5, kernel="gaussian", normalize=False)[-1],
        (euclidean,),
    )


def test_gaussian_kernel():
    """GBMS: K_ij = exp(-delta |x_i - x_j|^2 / 2); kept on the sphere, the same steps as vMF."""
    x = torch.randn(6, 2, dtype=torch.float64)
    K = torch.exp(-(2.0**2) * torch.cdist(x, x) ** 2 / 2)  # the paper's exp(-delta^2/2 |x - y|^2)
    expected = (K / K.sum(0, keepdim=True)).T @ x
    torch.testing.assert_close(
        recurrent_mean_shift(x, iterations=1, delta=2.0, kernel="gaussian", normalize=False)[1], expected
    )
    unit, _ = clusters_on_sphere(k=2, per=4, noise=0.4, seed=4)
    torch.testing.assert_close(recurrent_mean_shift(unit, iterations=3, normalize=True, kernel="gaussian")[-1],
                               recurrent_mean_shift(unit, iterations=3, normalize=True)[-1])


def test_batched_masked_and_loss_accumulation():
    a, ids_a = clusters_on_sphere(k=2, per=5, seed=2)
    b, ids_b = clusters_on_sphere(k=3, per=4, seed=3)
    batch = torch.zeros(2, 12, 4, dtype=torch.float64)
    batch[0, :10], batch[1] = a, b
    batch[0, 10:] = 1.0  # padding
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 10:] = False
    out = recurrent_mean_shift(batch, iterations=3, mask=mask)
    torch.testing.assert_close(out[-1][0, :10], recurrent_mean_shift(a, iterations=3)[-1])
    torch.testing.assert_close(out[-1][1], recurrent_mean_shift(b, iterations=3)[-1])
    x = a.clone().requires_grad_(True)
    loss = recurrent_grouping_loss(RecurrentMeanShift(iterations=2)(x), ids_a)["loss"]
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_bad_input():
    with pytest.raises(DataError, match="shape"):
        recurrent_mean_shift(torch.ones(3))
    with pytest.raises(DataError, match="NaN"):
        recurrent_mean_shift(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(DataError, match="eta"):
        recurrent_mean_shift(torch.ones(2, 2), eta=0.0)
    with pytest.raises(DataError, match="kernel"):
        recurrent_mean_shift(torch.ones(2, 2), kernel="flat")


def test_mask_removing_every_point_of_an_item_leaves_it_unchanged():
    a, _ = clusters_on_sphere(k=2, per=5, seed=5)
    batch = torch.stack([a, a.flip(0)])
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1] = False  # item 1: no point left
    out = recurrent_mean_shift(batch, iterations=3, mask=mask)
    for it in out:
        assert torch.isfinite(it).all()
        torch.testing.assert_close(it[1], batch[1])
    torch.testing.assert_close(out[-1][0], recurrent_mean_shift(a, iterations=3)[-1])
    single = recurrent_mean_shift(a, iterations=2, mask=torch.zeros(10, dtype=torch.bool))
    torch.testing.assert_close(single[-1], a)
    x = batch.clone().requires_grad_(True)
    recurrent_mean_shift(x, iterations=2, mask=mask)[-1].sum().backward()
    assert torch.isfinite(x.grad).all()
