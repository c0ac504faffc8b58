"""Lovász losses (Berman et al. 2018; HLE Eq. 3-6): exactness at vertices, brute force, gradients, edge cases."""
from __future__ import annotations

import itertools

import pytest
import torch

from labkit.errors import LabkitError
from labkit.losses.lovasz import (
    LovaszHinge, LovaszSoftmax, lovasz_binary, lovasz_binary_rows, lovasz_grad, lovasz_hinge, lovasz_softmax,
)


def iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    union = int(((pred == 1) | (target == 1)).sum())
    return 1.0 if union == 0 else int(((pred == 1) & (target == 1)).sum()) / union


def brute_force_eq3(p: torch.Tensor, t: torch.Tensor) -> float:
    """Eq. 3-5 written out: IoU(pi_1..pi_i) is the IoU when the i largest-error pixels are mispredicted."""
    xi = torch.where(t == 1, 1 - p, p)
    order = sorted(range(len(xi)), key=lambda i: -float(xi[i]))
    total, previous = 0.0, 1.0  # no pixel mispredicted: IoU 1
    for i in range(1, len(order) + 1):
        wrong = torch.zeros_like(t)
        wrong[order[:i]] = 1
        pred = torch.where(wrong == 1, 1 - t, t)
        current = iou(pred, t)
        total += float(xi[order[i - 1]]) * (previous - current)
        previous = current
    return total


def test_hand_computed_value() -> None:
    # t = (1, 0), p = (0.6, 0.3): errors 0.4 (positive), 0.3 (negative), sorted as given.
    # Delta_J after 1 error: 1 - IoU({pos wrong}) = 1; after both: 1. g = (1, 0): loss 0.4.
    assert lovasz_binary(torch.tensor([0.6, 0.3]), torch.tensor([1, 0])).item() == pytest.approx(0.4)
    # t = (1, 1, 0), p = (0.9, 0.5, 0.8): errors 0.1, 0.5, 0.8 -> order neg(0.8), pos(0.5), pos(0.1).
    # IoU after: 2/3, 1/3, 0 -> g = 1/3, 1/3, 1/3: loss (0.8 + 0.5 + 0.1) / 3.
    value = lovasz_binary(torch.tensor([0.9, 0.5, 0.8]), torch.tensor([1, 1, 0]))
    assert value.item() == pytest.approx(1.4 / 3)


def test_exact_at_vertices_equals_one_minus_iou() -> None:
    for bits in itertools.product([0, 1], repeat=5):
        t = torch.tensor(bits)
        for pbits in itertools.product([0, 1], repeat=5):
            p = torch.tensor(pbits, dtype=torch.float64)
            expected = 1.0 - iou(p.long(), t)
            assert lovasz_binary(p, t).item() == pytest.approx(expected, abs=1e-12)
            # the hinge on logits 2p - 1 has errors 2 xi: twice the Jaccard loss
            assert lovasz_hinge(2 * p - 1, t).item() == pytest.approx(2 * expected, abs=1e-12)


def test_matches_brute_force_eq3_to_5() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 5, 8):
        for _ in range(20):
            p = torch.rand(n, generator=gen, dtype=torch.float64)
            t = (torch.rand(n, generator=gen) < 0.5).long()
            assert lovasz_binary(p, t).item() == pytest.approx(brute_force_eq3(p, t), abs=1e-12)


def test_grad_is_jaccard_increments() -> None:
    g = lovasz_grad(torch.tensor([0.0, 1.0, 1.0]))
    # Delta_J: 1 - 2/3, 1 - 1/3, 1 - 0 -> increments 1/3 each
    assert torch.allclose(g, torch.full((3,), 1 / 3))


def test_hinge_is_berman_reference() -> None:
    logits = torch.tensor([2.0, -0.5, 0.3, -3.0])
    labels = torch.tensor([1, 1, 0, 0])
    errors = torch.relu(1 - logits * (2 * labels - 1))  # 0, 1.5, 1.3, 0 -> order pos, neg, ...
    ordered, perm = errors.sort(descending=True)
    expected = torch.dot(ordered, lovasz_grad(labels[perm].float()))
    assert lovasz_hinge(logits, labels).item() == pytest.approx(expected.item())


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(1)
    p = (torch.rand(7, generator=gen, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    t = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    assert torch.autograd.gradcheck(lambda x: lovasz_binary(x, t), (p,))
    logits = torch.randn(7, generator=gen, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lovasz_hinge(x, t), (logits,))
    scores = torch.randn(2, 3, 2, 2, generator=gen, dtype=torch.float64).requires_grad_(True)
    labels = torch.tensor([[[0, 1], [2, 255]], [[1, 1], [0, 2]]])
    assert torch.autograd.gradcheck(lambda x: lovasz_softmax(x.softmax(1), labels), (scores,))
    assert torch.autograd.gradcheck(lambda x: lovasz_softmax(x.softmax(1), labels, classes="present"), (scores,))


def test_softmax_is_mean_of_binary_problems() -> None:
    gen = torch.Generator().manual_seed(2)
    probs = torch.rand(1, 3, 4, 4, generator=gen).softmax(1)
    labels = torch.randint(0, 2, (1, 4, 4), generator=gen)  # class 2 absent
    per_class = [
        lovasz_binary(probs[:, c], (labels == c).long())  # errors |t - p|
        for c in range(3)
    ]
    assert lovasz_softmax(probs, labels).item() == pytest.approx(torch.stack(per_class).mean().item(), abs=1e-6)
    assert lovasz_softmax(probs, labels, classes="present").item() == pytest.approx(
        torch.stack(per_class[:2]).mean().item(), abs=1e-6
    )


def test_softmax_exact_on_one_hot_predictions() -> None:
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0]])
    probs = torch.nn.functional.one_hot(pred, 3).permute(0, 2, 1).float()[..., None]  # [1,3,6,1]
    ious = [iou((pred == c).long(), (labels == c).long()) for c in range(3)]
    assert lovasz_softmax(probs, labels[..., None]).item() == pytest.approx(1 - sum(ious) / 3)


def test_ignore_pixels_take_no_part() -> None:
    p = torch.tensor([0.9, 0.2, 0.7, 0.4])
    t = torch.tensor([1, 0, 255, 1])
    assert lovasz_binary(p, t, ignore_index=255).item() == pytest.approx(
        lovasz_binary(p[[0, 1, 3]], t[[0, 1, 3]]).item()
    )
    probs = torch.rand(1, 2, 1, 4).softmax(1)
    labels = torch.tensor([[[0, 255, 1, 255]]])
    assert lovasz_softmax(probs, labels).item() == pytest.approx(
        lovasz_softmax(probs[..., [0, 2]], labels[..., [0, 2]]).item()
    )


def test_permutation_of_pixels_does_not_matter() -> None:
    gen = torch.Generator().manual_seed(3)
    p, t = torch.rand(20, generator=gen), (torch.rand(20, generator=gen) < 0.3).long()
    perm = torch.randperm(20, generator=gen)
    assert lovasz_binary(p, t).item() == pytest.approx(lovasz_binary(p[perm], t[perm]).item())


def test_edge_cases() -> None:
    # no positive: the largest error (any false positive gives IoU 0)
    assert lovasz_binary(torch.tensor([0.1, 0.3]), torch.tensor([0, 0])).item() == pytest.approx(0.3)
    # all correct: 0
    assert lovasz_binary(torch.tensor([1.0, 0.0]), torch.tensor([1, 0])).item() == 0.0
    # every pixel ignored / empty input: 0 and still differentiable
    x = torch.tensor([0.5], requires_grad=True)
    out = lovasz_binary(x, torch.tensor([255]), ignore_index=255)
    out.backward()
    assert out.item() == 0.0 and x.grad is not None
    empty = torch.zeros(0, 3, requires_grad=True)
    assert lovasz_softmax(empty, torch.zeros(0, dtype=torch.long)).item() == 0.0
    assert lovasz_softmax(torch.rand(2, 3), torch.tensor([255, 255]), classes="present").item() == 0.0


def test_rows_are_one_binary_problem_each() -> None:
    torch.manual_seed(3)
    probs = torch.rand(4, 9, dtype=torch.float64, requires_grad=True)
    labels = torch.rand(4, 9) < 0.4
    labels[2] = False  # a row without a positive
    rows = lovasz_binary_rows(probs, labels)
    assert rows.shape == (4,)
    for r in range(4):
        assert rows[r].item() == pytest.approx(lovasz_binary(probs[r], labels[r].long()).item(), abs=1e-12)
        assert rows[r].item() == pytest.approx(brute_force_eq3(probs[r].detach(), labels[r].long()), abs=1e-12)
    assert torch.autograd.gradcheck(lambda p: lovasz_binary_rows(p, labels), (probs,))
    assert lovasz_binary_rows(probs[:, :0], labels[:, :0]).tolist() == [0.0] * 4
    with pytest.raises(LabkitError, match=r"\[R, N\]"):
        lovasz_binary_rows(probs[0], labels[0])


def test_bad_input_raises() -> None:
    with pytest.raises(LabkitError, match="shape"):
        lovasz_binary(torch.rand(3), torch.tensor([0, 1]))
    with pytest.raises(LabkitError, match="integer"):
        lovasz_binary(torch.rand(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(LabkitError, match="NaN"):
        lovasz_hinge(torch.tensor([float("nan"), 0.0]), torch.tensor([0, 1]))
    with pytest.raises(LabkitError, match="0 or 1"):
        lovasz_binary(torch.rand(2), torch.tensor([0, 2]))
    with pytest.raises(LabkitError, match="0..2"):
        lovasz_softmax(torch.rand(2, 3), torch.tensor([0, 3]))
    with pytest.raises(LabkitError, match="classes"):
        lovasz_softmax(torch.rand(2, 3), torch.tensor([0, 1]), classes="some")
    with pytest.raises(LabkitError, match="do not match"):
        lovasz_softmax(torch.rand(1, 3, 2, 2), torch.zeros(1, 3, 2, dtype=torch.long))


def test_modules() -> None:
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    assert LovaszSoftmax()(logits, labels).item() == pytest.approx(lovasz_softmax(logits.softmax(1), labels).item())
    x, t = torch.randn(10), torch.randint(0, 2, (10,))
    assert LovaszHinge()(x, t).item() == pytest.approx(lovasz_hinge(x, t).item())
