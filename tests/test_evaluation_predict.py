"""predict_dataset / evaluate end to end with an untrained baseline on a tiny in-memory dataset."""
import numpy as np
import pytest
import torch
from torch import nn

from labkit import methods
from labkit.errors import LabkitError
from labkit.evaluation import evaluate, predict_dataset


class Discs(torch.utils.data.Dataset):
    """Bright discs on black, one size per sample (mixed sizes across samples)."""

    class_names = ["background", "disc"]
    things, stuff, in_channels = [1], [], 1

    def __init__(self, sizes, masks=True):
        self.sizes, self.masks = sizes, masks

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        size = self.sizes[i]
        yy, xx = np.mgrid[:size, :size]
        inst = np.zeros((size, size), np.int64)
        inst[(yy - 6) ** 2 + (xx - 6) ** 2 <= 16] = 3
        inst[(yy - size + 7) ** 2 + (xx - size + 7) ** 2 <= 16] = 8
        sample = {"image": torch.from_numpy((inst > 0).astype(np.float32))[None], "name": f"disc{i}"}
        if self.masks:
            sample["instances"] = torch.from_numpy(inst)
        return sample


class Recorder(nn.Module):
    """Wraps a model and records the batch shape and the training flag of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, image):
        self.calls.append((tuple(image.shape), self.training, torch.is_grad_enabled()))
        return self.inner(image)


def test_predict_dataset_batches_equal_sizes_and_restores_train_mode():
    method = methods.get("components")
    model = Recorder(method.build_model(1, 2)).train()
    dataset = Discs([20, 20, 20, 24, 20])
    preds, gts = predict_dataset(method, model, dataset, batch_size=2, progress=False)
    assert [shape for shape, _, _ in model.calls] == [(2, 1, 20, 20), (1, 1, 20, 20), (1, 1, 24, 24),
                                                      (1, 1, 20, 20)]
    assert all(not training and not grad for _, training, grad in model.calls)
    assert model.training  # restored
    assert len(preds) == len(gts) == 5
    assert gts[3]["instances"].shape == (24, 24) and gts[3]["ids"].tolist() == [3, 8]
    assert preds[3]["instances"].shape == (24, 24) and len(preds[3]["ids"]) == 2


def test_images_without_masks_have_no_ground_truth():
    method = methods.get("watershed")
    preds, gts = predict_dataset(method, method.build_model(1, 2), Discs([20, 20], masks=False), progress=False)
    assert gts == [None, None]
    assert [len(p["ids"]) for p in preds] == [2, 2]


def test_evaluate_baseline_on_easy_discs_is_perfect():
    method = methods.get("components")
    results = evaluate(method, method.build_model(1, 2), Discs([20, 24, 20]), progress=False, min_size=5)
    assert results["n_images"] == 3 and results["n_instances"] == 6 and results["n_predicted"] == 6
    assert results["ap"] == pytest.approx(1.0)
    assert results["matching_accuracy"] == pytest.approx(1.0)
    assert "per_class" not in results  # one foreground class: class-agnostic
    # decode parameters pass through: dropping everything below 100 px loses both discs (49 px each)
    empty = evaluate(method, method.build_model(1, 2), Discs([20]), progress=False, min_size=100)
    assert empty["n_predicted"] == 0 and empty["ap"] == 0.0


def test_decoder_returning_the_wrong_number_of_predictions_is_reported():
    class Broken(type(methods.get("components"))):
        def decode(self, outputs, **params):
            return super().decode(outputs, **params)[:1]

    method = Broken()
    with pytest.raises(LabkitError, match="decoded 1 predictions for 2 images"):
        predict_dataset(method, method.build_model(1, 2), Discs([20, 20]), progress=False)
