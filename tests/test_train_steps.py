"""Fixed optimiser steps per epoch, the best checkpoint by a validation figure, and resume with both."""
import pytest
import torch

from labkit import methods
from labkit.checkpoint import read_checkpoint
from labkit.errors import LabkitError
from labkit.train import BEST_NAME, load_checkpoint, train
from test_train_checkpoint import Crash, FailsAtStep, FlippingSquares, run, without_seconds


def steps_taken(run_dir):
    return read_checkpoint(run_dir)["scheduler"]["last_epoch"]


@pytest.mark.parametrize("n", [2, 20])
def test_steps_per_epoch_does_not_depend_on_the_dataset_size(tmp_path, n):
    method = methods.get("semantic")
    model = method.build_model(in_channels=1, num_classes=2, width=4, depth=1)
    seen = []
    loss = method.loss

    def counting(outputs, batch):
        if torch.is_grad_enabled():
            seen.append(batch["image"].shape[0])
        return loss(outputs, batch)

    method.loss = counting
    train(method, model, FlippingSquares(n), out_dir=tmp_path, epochs=2, batch_size=3, progress=False,
          steps_per_epoch=5)
    assert seen == [3] * 10  # 5 full batches per epoch, with 2 images as with 20
    assert steps_taken(tmp_path) == 10


def test_one_pass_per_epoch_when_steps_are_not_given(tmp_path):
    run(tmp_path, epochs=2)
    assert steps_taken(tmp_path) == 2 * 3  # 6 samples, batch size 2


def test_steps_equal_to_one_pass_reproduce_the_one_pass_run(tmp_path):
    """The synthetic notebooks trained one pass per epoch; the same step count draws the same batches."""
    one_pass, _ = run(tmp_path / "pass")
    steps, _ = run(tmp_path / "steps", steps_per_epoch=3)
    for name, value in one_pass.state_dict().items():
        assert torch.equal(value, steps.state_dict()[name]), name


def test_resume_with_steps_per_epoch_is_exact(tmp_path):
    straight, straight_history = run(tmp_path / "straight", steps_per_epoch=4)
    with pytest.raises(Crash):
        run(tmp_path / "resumed", method=FailsAtStep(4 + 2, "crash"), steps_per_epoch=4)
    resumed, resumed_history = run(tmp_path / "resumed", init_seed=9, steps_per_epoch=4)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert without_seconds(resumed_history) == without_seconds(straight_history)


def test_changing_steps_per_epoch_is_a_different_run(tmp_path):
    run(tmp_path, epochs=1, steps_per_epoch=4)
    with pytest.raises(LabkitError, match="steps_per_epoch"):
        run(tmp_path, epochs=2, steps_per_epoch=5)


@pytest.mark.parametrize("bad", [0, -3, True])
def test_bad_steps_per_epoch(tmp_path, bad):
    with pytest.raises(LabkitError, match="steps_per_epoch"):
        run(tmp_path, steps_per_epoch=bad)


def test_best_checkpoint_follows_the_validation_metric(tmp_path):
    scores = iter([0.2, 0.7, 0.4])
    _, history = run(tmp_path, epochs=3, val_metric=lambda model: next(scores))
    assert [r["val_score"] for r in history["epochs"]] == [0.2, 0.7, 0.4]
    best = read_checkpoint(tmp_path / BEST_NAME)
    assert best["epoch"] == 2 and "optimizer" not in best
    method, model, _ = load_checkpoint(tmp_path / BEST_NAME)  # loads like model.pt
    assert method.key == "semantic"
    last = read_checkpoint(tmp_path)
    assert last["epoch"] == 3
    differs = any(not torch.equal(v, last["model"]["state"][k]) for k, v in best["model"]["state"].items())
    assert differs  # the best is the epoch-2 model, not the last one


def test_no_best_checkpoint_without_a_metric(tmp_path):
    _, history = run(tmp_path, epochs=2)  # a validation set, but no val_metric
    assert "val_loss" in history["epochs"][0] and "val_score" not in history["epochs"][0]
    assert not (tmp_path / BEST_NAME).exists()


def test_best_survives_resume(tmp_path):
    """A resumed run compares new epochs with the best of the history it restored."""
    scores = iter([0.9, 0.1])
    run(tmp_path, epochs=1, schedule="constant", val_metric=lambda model: next(scores))
    run(tmp_path, epochs=2, schedule="constant", val_metric=lambda model: next(scores))
    assert read_checkpoint(tmp_path / BEST_NAME)["epoch"] == 1


def test_a_non_finite_score_is_never_the_best(tmp_path):
    scores = iter([float("nan"), 0.3])
    run(tmp_path, epochs=2, val_metric=lambda model: next(scores))
    assert read_checkpoint(tmp_path / BEST_NAME)["epoch"] == 2
