"""The untrained baselines: registry, pass-through model, refusal to train, and decoding."""
import warnings

import numpy as np
import pytest
import torch

from labkit import methods
from labkit.errors import LabkitError
from labkit.metrics import matching_accuracy


def discs(centres, size=48, value=1.0, background=0.0, radius=7):
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), background, np.float32)
    truth = np.zeros((size, size), np.int64)
    for k, (cy, cx) in enumerate(centres, start=1):
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image[inside] = value if np.isscalar(value) else value[k - 1]
        truth[inside] = k
    return image, truth


def decode(key, image, **params):
    outputs = methods.get(key).build_model(1, 2)(torch.from_numpy(image)[None, None])
    return methods.get(key).decode(outputs, **params)[0]


def test_registered_parameter_free_and_refuse_training():
    assert {"watershed", "components"} <= set(methods.available())
    for key in ("watershed", "components"):
        method = methods.get(key)
        assert not method.trainable
        model = method.build_model(in_channels=3, num_classes=5)
        assert sum(p.numel() for p in model.parameters()) == 0
        image = torch.rand(2, 3, 8, 8)
        assert torch.equal(model(image)["image"], image)
        with pytest.raises(LabkitError, match="needs no training"):
            method.loss(model(image), {"image": image})


@pytest.mark.parametrize("key", ["components", "watershed"])
def test_separate_objects_are_found_exactly(key):
    image, truth = discs([(10, 10), (10, 36), (36, 20)])
    pred = decode(key, image)
    assert len(pred["ids"]) == 3
    assert matching_accuracy(pred["instances"], truth, iou=0.99) == 1.0
    assert pred["instances"].dtype == torch.int64 and pred["classes"].tolist() == [1, 1, 1]


def test_watershed_splits_touching_objects_that_components_merge():
    image, truth = discs([(20, 14), (20, 27), (38, 38)])  # first two overlap (centres 13 px apart, r = 7)
    assert len(decode("components", image)["ids"]) == 2
    pred = decode("watershed", image)
    assert len(pred["ids"]) == 3
    assert matching_accuracy(pred["instances"], truth, iou=0.8) == 1.0


def test_auto_polarity_takes_the_minority_phase():
    image, truth = discs([(10, 10), (36, 30)])
    bright = decode("components", image)
    dark = decode("components", 1.0 - image)  # dark objects on a bright background
    assert torch.equal(bright["instances"], dark["instances"])
    # forcing the wrong polarity makes the background the object
    assert len(decode("components", image, polarity="dark")["ids"]) == 1


def test_min_size_and_scores_reflect_contrast():
    image, truth = discs([(10, 10), (36, 30)], value=[1.0, 0.6])
    image[40:42, 2:4] = 1.0  # a 4-pixel speck
    pred = decode("components", image, min_size=10)
    assert len(pred["ids"]) == 2
    scores = dict(zip(pred["ids"].tolist(), pred["scores"].tolist()))
    bright_id = int(pred["instances"][10, 10])
    dim_id = int(pred["instances"][36, 30])
    # Otsu puts the threshold t between 0 and 0.6, so contrast = (mean - t) / 1 is larger for the 1.0 disc
    assert 0 < scores[dim_id] < scores[bright_id] <= 1
    assert len(decode("components", image, min_size=1)["ids"]) == 3


def test_blank_image_and_bad_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = decode("watershed", np.zeros((16, 16), np.float32))
    assert len(pred["ids"]) == len(pred["scores"]) == 0 and not pred["instances"].any()
    with pytest.raises(LabkitError, match="unknown decode parameter"):
        decode("components", np.zeros((4, 4), np.float32), bandwidth=1.0)
    with pytest.raises(LabkitError, match="polarity"):
        decode("components", np.zeros((4, 4), np.float32), polarity="up")
    with pytest.raises(LabkitError, match="unknown parameter"):
        methods.get("watershed", bandwidth=2.0)
