"""``instance_cross_entropy``: the cross-entropy of each instance's mean logits (hand value, gradcheck, edges)."""
import math

import pytest
import torch

from labkit.errors import LabkitError
from labkit.methods.semantic import instance_cross_entropy


def two_instances():
    """One 1x4 image, 2 classes: instance 5 (class 1) on pixels 0-1, instance 2 (class 1) on pixel 2, pixel 3 none."""
    logits = torch.tensor([[0.0, 0.0, 1.0, 9.0], [0.0, 2 * math.log(3.0), 0.0, -9.0]]).reshape(1, 2, 1, 4)
    instances = torch.tensor([[[5, 5, 2, 0]]])
    target = torch.tensor([[[1, 1, 1, 0]]])
    return logits, instances, target


def test_hand_computed_value():
    logits, instances, target = two_instances()
    # instance 5: mean logits (0, ln 3) -> -log(3/4); instance 2: logits (1, 0) -> -log(1/(1+e))
    expected = (math.log(4 / 3) + math.log(1 + math.e)) / 2
    assert instance_cross_entropy(logits, instances, target).item() == pytest.approx(expected, rel=1e-6)


def test_invariant_to_permuting_instance_ids():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    instances = torch.randint(0, 4, (2, 5, 5))
    target = torch.where(instances > 0, (instances % 2) + 1, 0)
    permutation = torch.tensor([0, 3, 1, 2])  # 0 stays background
    torch.testing.assert_close(instance_cross_entropy(logits, instances, target),
                               instance_cross_entropy(logits, permutation[instances], target))


def test_ids_are_per_image():
    """Instance 1 of image 0 and instance 1 of image 1 are two instances, not one."""
    logits = torch.zeros(2, 2, 1, 2)
    logits[0, 1] = 4.0
    instances = torch.ones(2, 1, 2, dtype=torch.int64)
    target = torch.ones(2, 1, 2, dtype=torch.int64)
    expected = (math.log(1 + math.exp(-4.0)) + math.log(2.0)) / 2
    assert instance_cross_entropy(logits, instances, target).item() == pytest.approx(expected, rel=1e-6)


def test_gradcheck_float64():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    instances = torch.randint(0, 3, (2, 3, 3))
    target = torch.where(instances > 0, instances, 0)
    target[0, 0, 0] = 255
    assert torch.autograd.gradcheck(lambda x: instance_cross_entropy(x, instances, target), (logits,))


def test_ignored_pixels_and_pixels_without_instance_get_no_gradient():
    logits, instances, target = two_instances()
    target[0, 0, 1] = 255
    logits.requires_grad_(True)
    instance_cross_entropy(logits, instances, target).backward()
    assert torch.all(logits.grad[..., 1] == 0) and torch.all(logits.grad[..., 3] == 0)
    assert torch.all(logits.grad[..., 0] != 0) and torch.all(logits.grad[..., 2] != 0)


@pytest.mark.parametrize("case", ["no instance", "all ignored", "empty image in batch"])
def test_edge_cases(case):
    logits = torch.randn(2, 2, 2, 2, requires_grad=True)
    instances = torch.zeros(2, 2, 2, dtype=torch.int64)
    target = torch.zeros(2, 2, 2, dtype=torch.int64)
    if case == "all ignored":
        instances[:] = 1
        target[:] = 255
    if case == "empty image in batch":
        instances[1, 0, 0], target[1, 0, 0] = 1, 1
    loss = instance_cross_entropy(logits, instances, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    if case == "empty image in batch":  # one instance, one pixel: its own cross-entropy
        expected = torch.nn.functional.cross_entropy(logits[1, :, 0, 0][None], torch.tensor([1]))
        torch.testing.assert_close(loss, expected)
        assert torch.all(logits.grad[0] == 0)
    else:
        assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_bad_input_raises_labkit_errors():
    with pytest.raises(LabkitError, match="do not match"):
        instance_cross_entropy(torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 2, dtype=torch.long),
                               torch.ones(1, 2, 2, dtype=torch.long))
    with pytest.raises(LabkitError, match="target class 3"):
        instance_cross_entropy(torch.zeros(1, 2, 1, 1), torch.ones(1, 1, 1, dtype=torch.long),
                               torch.full((1, 1, 1), 3))
