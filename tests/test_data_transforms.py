"""Joint transforms keep instance ids exact: no new id, no interpolated id, dtypes kept."""
from __future__ import annotations

import pytest
import torch

from labkit.data import Compose, RandomCrop, RandomFlip, RandomScale, SyntheticScenes, check_sample
from labkit.data.transforms import crop_or_pad, resize_nearest


def _sample(h: int = 24, w: int = 30) -> dict:
    g = torch.Generator().manual_seed(0)
    inst = torch.zeros(h, w, dtype=torch.int64)
    inst[2:10, 3:12] = 1000003  # large, non-consecutive ids
    inst[12:20, 5:9] = 7
    inst[4:22, 20:27] = 42
    sem = torch.where(inst > 0, torch.where(inst == 42, 2, 1), 0)
    return {
        "image": torch.rand(3, h, w, generator=g),
        "instances": inst,
        "semantic": sem,
        "labels": torch.tensor([0.0, 1.0, 1.0]),
        "name": "x",
    }


def _ids(t: torch.Tensor) -> set[int]:
    return set(t.unique().tolist())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", range(5))
def test_crop_keeps_a_subset_of_ids_and_pixels(seed):
    s = _sample()
    out = RandomCrop((16, 20), generator=_gen(seed))(s)
    assert out["image"].shape == (3, 16, 20) and out["instances"].shape == (16, 20)
    assert out["instances"].dtype == torch.int64 and out["image"].dtype == torch.float32
    assert _ids(out["instances"]) <= _ids(s["instances"])
    # the crop is a window of the original: find it and compare exactly
    found = any(
        torch.equal(s["instances"][y:y + 16, x:x + 20], out["instances"])
        and torch.equal(s["image"][:, y:y + 16, x:x + 20], out["image"])
        for y in range(24 - 16 + 1) for x in range(30 - 20 + 1)
    )
    assert found
    assert out["name"] == "x" and torch.equal(out["labels"], s["labels"])
    assert torch.equal(s["instances"], _sample()["instances"])  # input untouched


def test_crop_pads_small_images_with_background_and_ignore():
    s = _sample(10, 12)
    out = RandomCrop(16, generator=_gen(1))(s)
    assert out["instances"].shape == (16, 16)
    assert _ids(out["instances"]) == _ids(s["instances"])
    assert (out["instances"] > 0).sum() == (s["instances"] > 0).sum()
    assert (out["semantic"] == 255).sum() == 16 * 16 - 10 * 12
    assert (out["image"][:, out["semantic"] == 255] == 0).all()


def test_crop_or_pad_handles_windows_outside_the_image():
    x = torch.arange(12).reshape(3, 4)
    out = crop_or_pad(x, -1, 2, 3, 4, fill=-5)
    assert out.tolist() == [[-5, -5, -5, -5], [2, 3, -5, -5], [6, 7, -5, -5]]


def test_flip_is_exact():
    s = _sample()
    h = RandomFlip(horizontal=True, vertical=False, p=1.0)(s)
    assert torch.equal(h["instances"], s["instances"].flip(-1))
    assert torch.equal(h["image"], s["image"].flip(-1))
    v = RandomFlip(horizontal=False, vertical=True, p=1.0)(s)
    assert torch.equal(v["semantic"], s["semantic"].flip(-2))
    none = RandomFlip(p=0.0)(s)
    assert torch.equal(none["instances"], s["instances"])


def test_flip_probability_follows_the_generator():
    g = _gen(3)
    flips = sum(
        not torch.equal(RandomFlip(p=0.5, generator=g)(_sample())["instances"], _sample()["instances"])
        for _ in range(200)
    )
    assert 60 < flips < 140
    a = [RandomCrop(8, generator=_gen(7))(_sample())["instances"] for _ in range(2)]
    assert torch.equal(a[0], a[1])  # same seed, same crop


@pytest.mark.parametrize("seed", range(4))
def test_scale_never_invents_ids_or_classes(seed):
    s = _sample()
    out = RandomScale((0.5, 1.6), generator=_gen(seed))(s)
    h, w = out["instances"].shape
    assert out["image"].shape == (3, h, w) and out["semantic"].shape == (h, w)
    assert out["instances"].dtype == torch.int64 and out["semantic"].dtype == torch.int64
    assert _ids(out["instances"]) <= _ids(s["instances"])
    assert _ids(out["semantic"]) <= _ids(s["semantic"])
    # instance and semantic stay aligned: every pixel of id 42 is class 2
    assert (out["semantic"][out["instances"] == 42] == 2).all()
    assert 0 <= out["image"].min() and out["image"].max() <= 1


def test_nearest_resize_upscales_by_repetition():
    x = torch.tensor([[1, 2], [3, 4]])
    assert resize_nearest(x, 4, 4).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert torch.equal(resize_nearest(x, 2, 2), x)


def test_compose_on_a_dataset_keeps_the_contract():
    t = Compose([RandomScale((0.8, 1.2), generator=_gen(0)), RandomCrop(48, generator=_gen(1)),
                 RandomFlip(vertical=True, generator=_gen(2))])
    ds = SyntheticScenes("panoptic", "train", num_samples=4, transform=t)
    raw = SyntheticScenes("panoptic", "train", num_samples=4)
    for i in range(len(ds)):
        s = check_sample(ds[i])
        assert s["image"].shape == (3, 48, 48)
        assert _ids(s["instances"]) <= _ids(raw[i]["instances"])
        present = set(s["semantic"].unique().tolist()) - {0, 255}
        assert set(torch.nonzero(s["labels"]).flatten().tolist()) == present  # labels follow the crop
