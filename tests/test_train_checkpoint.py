"""Checkpoints: exact resume, NaN stop, atomic writes, load_checkpoint."""
import json
import math

import pytest
import torch

from labkit import methods
from labkit.errors import LabkitError, NonFiniteLossError
from labkit.methods.semantic import SemanticSegmentation
from labkit.train import load_checkpoint, train


class FlippingSquares(torch.utils.data.Dataset):
    """Tiny labelled dataset whose random flips draw on torch's global generator."""

    class_names = ["background", "square"]
    num_classes = 2
    things = [1]
    stuff = []
    in_channels = 1

    def __init__(self, n=6, size=12):
        self.samples = []
        for i in range(n):
            g = torch.Generator().manual_seed(i)
            instances = torch.zeros(size, size, dtype=torch.int64)
            y, x = torch.randint(0, size - 4, (2,), generator=g).tolist()
            instances[y:y + 4, x:x + 4] = 1
            image = instances.float()[None] + 0.3 * torch.rand(1, size, size, generator=g)
            self.samples.append({"image": image, "instances": instances, "semantic": instances.clone()})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        if torch.rand(()) < 0.5:
            sample = {key: value.flip(-1) for key, value in sample.items()}
        return sample


STEPS_PER_EPOCH = 3  # 6 samples, batch size 2


class Crash(Exception):
    pass


class FailsAtStep(SemanticSegmentation):
    """The semantic method, but its training loss fails from training step ``step`` on (counted from 1)."""

    def __init__(self, step, failure):
        super().__init__()
        self.fail_step, self.failure, self.calls = step, failure, 0

    def loss(self, outputs, batch):
        self.calls += torch.is_grad_enabled()  # validation runs without grad
        terms = super().loss(outputs, batch)
        if self.calls >= self.fail_step:
            if self.failure == "nan":
                terms["cross_entropy"] = terms["cross_entropy"] * math.nan
                terms["loss"] = terms["cross_entropy"]
            else:
                raise Crash
        return terms


def run(out_dir, method=None, epochs=2, init_seed=0, **kw):
    method = method or methods.get("semantic")
    torch.manual_seed(init_seed)
    model = method.build_model(in_channels=1, num_classes=2, width=4, depth=1)
    options = dict(epochs=epochs, batch_size=2, lr=1e-2, progress=False, val_set=FlippingSquares(2))
    history = train(method, model, FlippingSquares(), out_dir=out_dir, **{**options, **kw})
    return model, history


def without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history["epochs"]]


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
    straight, straight_history = run(tmp_path / "straight")
    with pytest.raises(Crash):  # dies at the first step of epoch 2, after the epoch-1 checkpoint
        run(tmp_path / "resumed", method=FailsAtStep(STEPS_PER_EPOCH + 1, "crash"))
    resumed, resumed_history = run(tmp_path / "resumed", init_seed=123)  # state must come from the file
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert without_seconds(resumed_history) == without_seconds(straight_history)


def test_the_model_comes_back_contiguous_also_when_training_raises(tmp_path):
    """Training runs in channels-last format; the caller gets the format a loaded checkpoint has."""
    finished, _ = run(tmp_path / "finished", epochs=1)
    method = FailsAtStep(2, "crash")
    crashed = method.build_model(in_channels=1, num_classes=2, width=4, depth=1)
    with pytest.raises(Crash):
        train(method, crashed, FlippingSquares(), out_dir=tmp_path / "crashed", epochs=1, batch_size=2, progress=False)
    for model in (finished, crashed):
        assert any(p.ndim == 4 and p.shape[1] > 1 for p in model.parameters())  # the formats differ for these
        assert all(p.is_contiguous() for p in model.parameters())


def test_extending_a_finished_constant_lr_run_equals_training_longer(tmp_path):
    """With a schedule that does not depend on the total, train(1) + train(2) == train(2)."""
    longer, longer_history = run(tmp_path / "longer", schedule="constant")
    run(tmp_path / "extended", epochs=1, schedule="constant")
    extended, extended_history = run(tmp_path / "extended", epochs=2, schedule="constant", init_seed=5)
    for name, value in longer.state_dict().items():
        assert torch.equal(value, extended.state_dict()[name]), name
    assert without_seconds(extended_history) == without_seconds(longer_history)


def test_seeded_runs_are_reproducible_and_the_seed_matters(tmp_path):
    a, _ = run(tmp_path / "a", epochs=1)
    b, _ = run(tmp_path / "b", epochs=1)
    c, _ = run(tmp_path / "c", epochs=1, seed=1)
    weight = "backbone.stem.0.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1: term 'cross_entropy' = nan"):
        run(tmp_path, method=FailsAtStep(STEPS_PER_EPOCH + 1, "nan"), epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "model.pt"]
    method, model, checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert checkpoint["epoch"] == 1 and len(checkpoint["history"]["epochs"]) == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(json.loads((tmp_path / "history.json").read_text())["epochs"]) == 1
    assert method.key == "semantic"


def test_checkpoint_layout(tmp_path):
    model, history = run(tmp_path, epochs=1, data_spec="synthetic:squares")
    method, loaded, checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["method"] == {"key": "semantic", "params": {"class_weights": None, "ignore_index": 255}}
    assert checkpoint["model"]["config"] == model.config
    assert checkpoint["data"] == {
        "class_names": ["background", "square"], "num_classes": 2, "things": [1], "stuff": [],
        "in_channels": 1, "spec": "synthetic:squares",
    }
    assert checkpoint["epoch"] == 1
    assert checkpoint["training"] == {
        "epochs": 1, "batch_size": 2, "lr": 1e-2, "weight_decay": 0.0, "seed": 0, "schedule": "cosine",
    }
    assert set(checkpoint["rng"]) == {"python", "numpy", "torch", "cuda", "loader"}
    assert checkpoint["history"] == history == json.loads((tmp_path / "history.json").read_text())
    assert set(history["epochs"][0]) == {"epoch", "cross_entropy", "loss", "val_cross_entropy", "val_loss", "lr", "seconds", "threads"}
    assert not loaded.training
    image = torch.rand(1, 1, 12, 12)
    torch.testing.assert_close(loaded(image)["semantic"], model.eval()(image)["semantic"])


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    run(tmp_path, epochs=1)
    before = (tmp_path / "model.pt").read_bytes()

    def torch_save_that_dies(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torch_save_that_dies)
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, epochs=2)
    assert (tmp_path / "model.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "model.pt"]


def test_resuming_a_different_run_is_refused_unless_resume_is_false(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(LabkitError, match="lr: checkpoint 0.01, now 0.1"):
        run(tmp_path, epochs=1, lr=0.1)
    _, history = run(tmp_path, epochs=1, lr=0.1, resume=False)
    assert load_checkpoint(tmp_path)[2]["training"]["lr"] == 0.1 and len(history["epochs"]) == 1


def test_a_run_resumes_after_labkit_added_a_method_parameter(tmp_path):
    from labkit import checkpoint as ckpt

    run(tmp_path, epochs=1)
    state = ckpt.read_checkpoint(tmp_path / "model.pt")
    del state["method"]["params"]["ignore_index"]  # as written before the parameter existed
    ckpt.save_checkpoint(tmp_path / "model.pt", state)
    _, history = run(tmp_path, epochs=2)
    assert len(history["epochs"]) == 2
    state["method"]["params"]["class_weights"] = (1.0, 2.0)  # a parameter that does differ still refuses
    ckpt.save_checkpoint(tmp_path / "model.pt", state)
    with pytest.raises(LabkitError, match="method parameters"):
        run(tmp_path, epochs=3)


def test_a_finished_run_is_not_trained_again(tmp_path):
    _, first = run(tmp_path, epochs=1)
    _, again = run(tmp_path, epochs=1)
    assert again == first


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(LabkitError, match="no checkpoint at .*missing"):
        load_checkpoint(tmp_path / "missing" / "model.pt")
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LabkitError, match="not a readable labkit checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(LabkitError, match="not a labkit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
