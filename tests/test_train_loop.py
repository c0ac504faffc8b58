"""The training loop's arguments, errors, devices, schedule and progress display."""
import logging
import math

import pytest
import torch
from torch import nn

from labkit import methods
from labkit.errors import DataError, LabkitError
from labkit.train import lr_factor, resolve_device, train


def tiny_samples(n=2, channels=1, size=8):
    torch.manual_seed(0)
    instances = torch.zeros(size, size, dtype=torch.int64)
    instances[2:5, 2:5] = 1
    return [{"image": torch.rand(channels, size, size), "instances": instances} for _ in range(n)]


def tiny_model(in_channels=1):
    torch.manual_seed(0)
    return methods.get("semantic").build_model(in_channels=in_channels, num_classes=2, width=2, depth=1)


def quick(tmp_path, data=None, model=None, method=None, **kw):
    return train(
        method or methods.get("semantic"), model or tiny_model(), tiny_samples() if data is None else data,
        out_dir=tmp_path, **{"epochs": 1, "batch_size": 2, "progress": False, **kw},
    )


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(LabkitError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(LabkitError, match="auto, cpu, cuda"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(LabkitError, match="invalid device 'cuda:x'"):
        resolve_device("cuda:x")


def test_lr_schedules():
    assert lr_factor(0, 10, "cosine") == 1.0
    assert lr_factor(5, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(5, 10, "poly") == pytest.approx(0.5**0.9)
    assert lr_factor(7, 10, "constant") == 1.0
    # one cycle: lr/25 at the start, lr at 30 % of the steps, half way down at 65 %, 0 at the end
    assert lr_factor(0, 100, "onecycle") == pytest.approx(1 / 25)
    assert lr_factor(15, 100, "onecycle") == pytest.approx(1 / 25 + (1 - 1 / 25) / 2)
    assert lr_factor(30, 100, "onecycle") == pytest.approx(1.0)
    assert lr_factor(65, 100, "onecycle") == pytest.approx(0.5)
    assert lr_factor(100, 100, "onecycle") == pytest.approx(0.0)
    rising = [lr_factor(t, 100, "onecycle") for t in range(31)]
    assert rising == sorted(rising)


def test_lr_follows_the_cosine_schedule_per_step(tmp_path):
    history = quick(tmp_path, data=tiny_samples(4), epochs=2, lr=0.1)
    # 2 steps per epoch, 4 in all: the last step of epoch 1 is step index 1
    assert history["epochs"][0]["lr"] == pytest.approx(0.1 * lr_factor(1, 4, "cosine"))
    assert history["epochs"][1]["lr"] == pytest.approx(0.1 * lr_factor(3, 4, "cosine"))


def test_progress_bar_shows_each_loss_term(tmp_path, capsys):
    quick(tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "cross_entropy=" in err and "loss=" in err


def test_epochs_are_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="labkit.train"):
        quick(tmp_path)
    assert any("semantic epoch 1/1: cross_entropy=" in message for message in caplog.messages)


def test_amp_is_cuda_only(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="labkit.train"):
        history = quick(tmp_path, amp=True, device="cpu")
    assert math.isfinite(history["epochs"][0]["loss"])
    assert any("mixed precision needs CUDA" in message for message in caplog.messages)
    with pytest.raises(LabkitError, match="amp must be"):
        quick(tmp_path, amp="yes")


def test_empty_datasets_are_refused(tmp_path):
    with pytest.raises(DataError, match="training set is empty"):
        quick(tmp_path, data=[])
    with pytest.raises(DataError, match="validation set is empty"):
        quick(tmp_path, val_set=[])


def test_channel_mismatch_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="3 channel.*expects 1"):
        quick(tmp_path, data=tiny_samples(channels=3))


@pytest.mark.parametrize(
    "kw, match",
    [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"schedule": "step"}, "cosine, onecycle, poly")],
)
def test_bad_arguments(tmp_path, kw, match):
    with pytest.raises(LabkitError, match=match):
        quick(tmp_path, **kw)


def test_model_needs_a_config(tmp_path):
    with pytest.raises(LabkitError, match="build_model"):
        quick(tmp_path, model=nn.Conv2d(1, 2, 1))


def test_loss_must_report_the_total(tmp_path):
    class NoTotal(type(methods.get("semantic"))):
        def loss(self, outputs, batch):
            return {"cross_entropy": super().loss(outputs, batch)["cross_entropy"]}

    with pytest.raises(LabkitError, match="under 'loss'"):
        quick(tmp_path, method=NoTotal())


def test_batches_reach_the_method_on_the_device_with_names(tmp_path):
    seen = []

    class Spy(type(methods.get("semantic"))):
        def loss(self, outputs, batch):
            seen.append(batch)
            return super().loss(outputs, batch)

    data = [dict(sample, name=f"img{i}") for i, sample in enumerate(tiny_samples())]
    quick(tmp_path, data=data, method=Spy(), device="cpu")
    assert sorted(seen[0]["name"]) == ["img0", "img1"]
    assert seen[0]["image"].shape == (2, 1, 8, 8) and seen[0]["instances"].shape == (2, 8, 8)


def test_begin_epoch_is_called_before_each_epoch_also_after_a_resume(tmp_path):
    calls = []

    class Spy(type(methods.get("semantic"))):
        def begin_epoch(self, epoch, epochs):
            calls.append((epoch, epochs))

    quick(tmp_path, method=Spy(), epochs=2)
    quick(tmp_path, method=Spy(), epochs=3)  # resumes after epoch 2
    assert calls == [(1, 2), (2, 2), (3, 3)]
