"""The ``semantic`` method: cross-entropy loss (hand-computed, gradcheck, ignore) and decode."""
import math

import pytest
import torch

from labkit import methods
from labkit.errors import LabkitError
from labkit.methods.semantic import semantic_cross_entropy


def three_pixels():
    """Logits [1,2,1,3]: pixel 0 (0, ln 3) class 1; pixel 1 (0, 0) class 0; pixel 2 ignored."""
    logits = torch.tensor([[0.0, 0.0, 7.0], [math.log(3.0), 0.0, -7.0]]).reshape(1, 2, 1, 3)
    target = torch.tensor([[[1, 0, 255]]])
    return logits, target


def test_registered_with_heads_and_task():
    method = methods.get("semantic")
    assert "semantic" in methods.available()
    assert method.task == "semantic"
    assert method.heads(5) == {"semantic": 5}
    assert method.normalized_heads() == ()


def test_loss_matches_hand_computed_value_and_ignores_255():
    logits, target = three_pixels()
    # pixel 0: -log(3/4); pixel 1: -log(1/2); pixel 2 ignored
    expected = (math.log(4 / 3) + math.log(2)) / 2
    assert semantic_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)
    terms = methods.get("semantic").loss({"semantic": logits}, {"semantic": target})
    assert set(terms) == {"cross_entropy", "loss"}
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_class_weights_give_the_weighted_mean():
    logits, target = three_pixels()
    method = methods.get("semantic", class_weights=(1.0, 3.0))
    expected = (3 * math.log(4 / 3) + 1 * math.log(2)) / 4
    assert method.loss({"semantic": logits}, {"semantic": target})["loss"].item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(LabkitError, match="3 class_weights for 2 classes"):
        methods.get("semantic", class_weights=(1.0, 1.0, 1.0)).loss({"semantic": logits}, {"semantic": target})


def test_ignored_pixels_get_no_gradient():
    logits, target = three_pixels()
    logits.requires_grad_(True)
    semantic_cross_entropy(logits, target).backward()
    assert torch.all(logits.grad[..., 2] == 0)
    assert torch.all(logits.grad[..., :2] != 0)


def test_gradcheck_float64():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 2, 3))
    target[0, 0, 0] = 255
    assert torch.autograd.gradcheck(lambda x: semantic_cross_entropy(x, target), (logits,))


def test_all_ignored_gives_zero_connected_to_graph():
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = semantic_cross_entropy(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_without_semantic_map_trains_foreground_against_background():
    logits = torch.randn(1, 2, 2, 2)
    instances = torch.tensor([[[0, 3], [5, 0]]])
    method = methods.get("semantic")
    got = method.loss({"semantic": logits}, {"instances": instances})["loss"]
    torch.testing.assert_close(got, semantic_cross_entropy(logits, (instances > 0).long()))


def test_bad_targets_raise_labkit_errors():
    with pytest.raises(LabkitError, match="target class 4"):
        semantic_cross_entropy(torch.zeros(1, 2, 1, 1), torch.tensor([[[4]]]))
    with pytest.raises(LabkitError, match="do not match"):
        semantic_cross_entropy(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 2, dtype=torch.long))


def test_decode_returns_argmax_map_and_class_components():
    # image 0: class 2 at one pixel, class 1 in two separate blobs, background elsewhere
    logits = torch.zeros(2, 3, 4, 5)
    logits[0, 0] = 1.0
    logits[0, 2, 1, 1] = 3.0
    logits[0, 1, 3, 3:5] = 3.0
    logits[0, 1, 0, 4] = 3.0
    logits[1, 1] = 1.0  # image 1: class 1 everywhere
    preds = methods.get("semantic").decode({"semantic": logits})
    assert len(preds) == 2
    for pred in preds:
        assert pred["semantic"].shape == (4, 5) and pred["semantic"].dtype == torch.int64
        assert pred["instances"].shape == (4, 5) and pred["instances"].dtype == torch.int64
    first = preds[0]
    assert first["semantic"][1, 1] == 2 and (first["semantic"] == 1).sum() == 3
    assert sorted(first["classes"].tolist()) == [1, 1, 2]
    for i, c in zip(first["ids"].tolist(), first["classes"].tolist()):
        assert torch.all(first["semantic"][first["instances"] == i] == c)
    # score = mean winning-class probability: softmax([1, 3, 0])[1] for every component
    expected = torch.tensor([1.0, 3.0, 0.0]).softmax(0)[1]
    torch.testing.assert_close(first["scores"], expected.repeat(3))
    assert preds[1]["ids"].tolist() == [1] and torch.all(preds[1]["instances"] == 1)
    things_only = methods.get("semantic").decode({"semantic": logits}, things=[2])[0]
    assert things_only["classes"].tolist() == [2]
    with pytest.raises(LabkitError, match="bandwidth"):
        methods.get("semantic").decode({"semantic": logits}, bandwidth=0.5)
