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
    x = F.normalize(torch.randn(7, 3, dtype=torch.float64), dim=1)
    delta, eta = 4.0, 0.7
    X = x.T  # the paper's D x N layout
    K = torch.exp(delta * X.T @ X)
    D = torch.diag(K.T @ torch.ones(7, dtype=torch.float64))
    expected = X @ (eta * K @ torch.linalg.inv(D) + (1 - eta) * torch.eye(7, dtype=torch.float64))
    out = recurrent_mean_shift(x, iterations=1, eta=eta, delta=delta)
    assert len(out) == 2 and out[0] is x
    torch.testing.assert_close(out[1], expected.T)


def test_delta_tied_to_margin():
    assert delta_from_margin(0.5) == pytest.approx(6.0)
    assert RecurrentMeanShift(alpha=0.7).delta == pytest.approx(10.0)
    with pytest.raises(DataError):
        delta_from_margin(1.0)


def test_collapses_separated_clusters_to_k_points():
    x, ids = clusters_on_sphere(k=3)
    iterates = RecurrentMeanShift(alpha=0.5, iterations=10)(x)
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
    assert torch.autograd.gradcheck(lambda t: recurrent_mean_shift(t, iterations=3, eta=0.8)[-1], (x,))
    assert torch.autograd.gradcheck(lambda t: recurrent_mean_shift(t, iterations=2, normalize=True)[-1], (x,))
    euclidean = (2 * x).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: recurrent_mean_shift(t, iterations=2, delta=2.0, kernel="gaussian")[-1], (euclidean,)
    )


def test_gaussian_kernel():
    """GBMS: K_ij = exp(-delta |x_i - x_j|^2 / 2); kept on the sphere, the same steps as vMF."""
    x = torch.randn(6, 2, dtype=torch.float64)
    K = torch.exp(-2.0 * torch.cdist(x, x) ** 2 / 2)
    expected = (K / K.sum(0, keepdim=True)).T @ x
    torch.testing.assert_close(recurrent_mean_shift(x, iterations=1, delta=2.0, kernel="gaussian")[1], expected)
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
