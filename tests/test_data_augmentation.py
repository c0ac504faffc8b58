"""Microscopy/photo augmentation: quarter turns, intensity jitter, presets; ids stay exact."""
from __future__ import annotations

import pytest
import torch

from labkit.data import check_sample
from labkit.data.transforms import RandomCrop, RandomFlip, RandomIntensity, RandomRot90, RandomScale, augmentation
from labkit.errors import LabkitError


def _sample(h=20, w=20):
    g = torch.Generator().manual_seed(0)
    inst = torch.zeros(h, w, dtype=torch.int64)
    inst[2:9, 3:7] = 9
    inst[12:18, 10:19] = 4
    return {"image": torch.rand(1, h, w, generator=g), "instances": inst, "semantic": (inst > 0).long(), "name": "s"}


def test_rot90_moves_image_and_masks_together_and_visits_all_turns():
    s = _sample()
    g = torch.Generator().manual_seed(1)
    rot = RandomRot90(generator=g)
    seen = set()
    for _ in range(40):
        out = check_sample(rot(s))
        k = next(k for k in range(4) if torch.equal(out["instances"], torch.rot90(s["instances"], k, (0, 1))))
        assert torch.equal(out["image"], torch.rot90(s["image"], k, (1, 2)))
        assert torch.equal(out["semantic"], torch.rot90(s["semantic"], k, (0, 1)))
        seen.add(k)
    assert seen == {0, 1, 2, 3}
    assert torch.equal(s["instances"], _sample()["instances"])  # input untouched


def test_intensity_changes_the_image_only_within_its_ranges():
    s = _sample()
    t = RandomIntensity(scale=(0.5, 2.0), offset=(-0.2, 0.2), p=1.0, generator=torch.Generator().manual_seed(0))
    scales = []
    for _ in range(30):
        out = t(s)
        assert torch.equal(out["instances"], s["instances"]) and torch.equal(out["semantic"], s["semantic"])
        # out = s * a + b exactly: recover a, b from two pixels
        x, y = s["image"].flatten(), out["image"].flatten()
        a = float((y[1] - y[0]) / (x[1] - x[0]))
        b = float(y[0] - a * x[0])
        torch.testing.assert_close(y, x * a + b, rtol=1e-5, atol=1e-5)
        assert 0.5 - 1e-4 <= a <= 2.0 + 1e-4 and -0.2 - 1e-4 <= b <= 0.2 + 1e-4
        scales.append(a)
    assert min(scales) < 0.8 and max(scales) > 1.25  # spread over the range
    assert torch.equal(RandomIntensity(p=0.0)(s)["image"], s["image"])


@pytest.mark.parametrize("kw, match", [
    ({"scale": (0.0, 1.0)}, "scale"), ({"scale": (2.0, 1.0)}, "scale"), ({"offset": (0.2, -0.2)}, "offset"),
    ({"p": 1.5}, "probability"),
])
def test_intensity_bad_parameters(kw, match):
    with pytest.raises(LabkitError, match=match):
        RandomIntensity(**kw)


def test_presets():
    micro = augmentation("auto", crop=16, in_channels=1)
    kinds = [type(t) for t in micro.transforms]
    assert kinds == [RandomCrop, RandomFlip, RandomRot90, RandomIntensity]
    assert micro.transforms[1].vertical
    photo = augmentation("auto", crop=16, in_channels=3)
    assert [type(t) for t in photo.transforms] == [RandomCrop, RandomFlip, RandomIntensity]
    assert not photo.transforms[1].vertical
    assert [type(t) for t in augmentation("none", crop=16).transforms] == [RandomCrop]
    jitter = augmentation("microscopy", crop=16, scale_jitter=(0.8, 1.2))
    assert type(jitter.transforms[0]) is RandomScale
    out = check_sample(micro(_sample(30, 12)))
    assert out["image"].shape == (1, 16, 16)
    assert set(out["instances"].unique().tolist()) <= {0, 4, 9}
    with pytest.raises(LabkitError, match="unknown augmentation"):
        augmentation("satellite")
