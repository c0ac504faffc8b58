"""Synthetic scene families: determinism, disjoint splits, contract, and the property each family exists for."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from labkit.data import FAMILIES, SyntheticScenes, check_sample, collate, load_dataset
from labkit.data.synthetic import digits
from labkit.errors import UnknownKeyError


@pytest.mark.parametrize("family", list(FAMILIES))
def test_same_index_gives_the_same_sample(family):
    a, b = SyntheticScenes(family, "train"), SyntheticScenes(family, "train")
    for i in (0, 7):
        s, t = a[i], b[i]
        assert torch.equal(s["image"], t["image"])
        assert torch.equal(s["instances"], t["instances"])
        assert torch.equal(s["semantic"], t["semantic"])
        assert s["name"] == t["name"]
    assert not torch.equal(a[0]["image"], a[1]["image"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_splits_share_no_image(family):
    seen = {}
    for split in ("train", "val", "test"):
        ds = SyntheticScenes(family, split, num_samples=40)
        for i in range(len(ds)):
            key = ds.scene(i).image.tobytes()
            assert key not in seen, f"{split}[{i}] equals {seen[key]}"
            seen[key] = f"{split}[{i}]"


def test_seed_gives_another_dataset():
    a, b = SyntheticScenes("shapes", seed=0), SyntheticScenes("shapes", seed=1)
    assert not torch.equal(a[0]["image"], b[0]["image"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_samples_follow_the_contract(family):
    ds = SyntheticScenes(family, "val", num_samples=12)
    assert ds.class_names[0] == "background" and ds.num_classes == len(ds.class_names)
    assert set(ds.things).isdisjoint(ds.stuff)
    assert set(ds.things) | set(ds.stuff) == set(range(1, ds.num_classes))
    for i in range(len(ds)):
        s = check_sample(ds[i])
        img, inst, sem = s["image"], s["instances"], s["semantic"]
        assert img.shape == (ds.in_channels, 64, 64) and 0 <= img.min() and img.max() <= 1
        ids = inst.unique()
        assert len(ids[ids > 0]) >= 1
        thing_pixels = sem[inst > 0]
        assert set(thing_pixels.tolist()) <= set(ds.things)
        assert set(sem[inst == 0].tolist()) <= {0, *ds.stuff}
        for i_ in ids[ids > 0].tolist():  # one class per instance
            assert len(sem[inst == i_].unique()) == 1
        present = set(sem.unique().tolist()) - {0}
        assert s["labels"].shape == (ds.num_classes,)
        assert set(torch.nonzero(s["labels"]).flatten().tolist()) == present
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, ds.in_channels, 64, 64) and batch["name"] == [ds.name(0), ds.name(1)]


def test_sizes_and_counts_are_overridable():
    ds = SyntheticScenes("shapes", "train", num_samples=5, size=(48, 80))
    assert len(ds) == 5
    assert ds[4]["image"].shape == (3, 48, 80)
    with pytest.raises(IndexError):
        ds[5]
    assert len(SyntheticScenes("digits", "train")) == 400
    assert len(SyntheticScenes("digits", "test")) == 50


def test_unknown_family_lists_the_families():
    with pytest.raises(UnknownKeyError) as err:
        load_dataset("synthetic:blobz")
    for name in ["blobz", *FAMILIES]:
        assert name in str(err.value)
    with pytest.raises(UnknownKeyError, match="train"):
        SyntheticScenes("shapes", "holdout")


def test_spec_split_wins_over_the_default():
    assert load_dataset("synthetic:sticks:val", split="test").split == "val"
    assert load_dataset("synthetic:sticks", split="test").split == "test"
    assert load_dataset("synthetic:sticks").split == "train"
    ds = load_dataset("synthetic:shapes", num_samples=3, size=32)
    assert len(ds) == 3 and ds[0]["image"].shape[-1] == 32


def _otsu_iou(image: np.ndarray, fg: np.ndarray) -> float:
    grey = image.mean(axis=0)
    t = threshold_otsu(grey)
    return max(((p & fg).sum() / (p | fg).sum()) for p in (grey > t, grey <= t))


def test_shapes_background_defeats_a_global_threshold():
    ds = SyntheticScenes("shapes", "test", num_samples=20)
    ious = [_otsu_iou(ds.scene(i).image, ds.scene(i).instances > 0) for i in range(len(ds))]
    assert np.mean(ious) < 0.5 and max(ious) < 0.8
    # while the objects themselves are clean: every instance covers at least a few pixels
    for i in range(len(ds)):
        inst = ds.scene(i).instances
        counts = np.bincount(inst.ravel())[1:]
        assert counts[counts > 0].min() >= 16


def test_shapes_has_all_classes_and_touching_or_occluding_objects():
    ds = SyntheticScenes("shapes", "train", num_samples=30)
    classes, touching = set(), 0
    for i in range(len(ds)):
        sc = ds.scene(i)
        classes |= set(np.unique(sc.semantic).tolist())
        inst = sc.instances
        right = (inst[:, 1:] != inst[:, :-1]) & (inst[:, 1:] > 0) & (inst[:, :-1] > 0)
        down = (inst[1:] != inst[:-1]) & (inst[1:] > 0) & (inst[:-1] > 0)
        touching += bool(right.any() or down.any())
    assert classes == {0, 1, 2, 3, 4}
    assert touching >= 10  # instances sharing a border (touching or occluding) are common


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return ys.min(), xs.min(), ys.max() + 1, xs.max() + 1


def _box_iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_sticks_boxes_overlap_heavily():
    ds = SyntheticScenes("sticks", "train", num_samples=20)
    best = []
    for i in range(len(ds)):
        sc = ds.scene(i)
        ids = [j for j in np.unique(sc.instances) if j > 0]
        assert len(ids) >= 2 and set(np.unique(sc.semantic)) == {0, 1}
        boxes = [_box(sc.instances == j) for j in ids]
        best.append(max(_box_iou(a, b) for a, b in itertools.combinations(boxes, 2)))
        # sticks are thin: each covers well under half of its own box
        for j, box in zip(ids, boxes):
            area = (box[2] - box[0]) * (box[3] - box[1])
            assert (sc.instances == j).sum() < 0.6 * area or min(box[2] - box[0], box[3] - box[1]) < 8
    assert np.mean(best) > 0.35 and np.mean(np.asarray(best) > 0.2) > 0.8


def test_digit_pools_are_disjoint_and_classes_are_digits():
    pools = [set(digits.pool(s).tolist()) for s in ("train", "val", "test")]
    assert all(a.isdisjoint(b) for a, b in itertools.combinations(pools, 2))
    assert sum(map(len, pools)) == 1797
    ds = SyntheticScenes("digits", "train", num_samples=30)
    assert ds.class_names == ["background", *map(str, range(10))] and ds.in_channels == 1
    seen = set()
    for i in range(len(ds)):
        seen |= set(ds.scene(i).semantic.ravel().tolist())
    assert seen <= set(range(11)) and len(seen) >= 8


def test_panoptic_has_stuff_without_instances():
    ds = SyntheticScenes("panoptic", "train", num_samples=15)
    assert ds.stuff and ds.things and ds.class_names[ds.stuff[0]] == "water"
    n_stuff = []
    for i in range(len(ds)):
        s = ds[i]
        inst, sem = s["instances"], s["semantic"]
        stuff_pixels = torch.isin(sem, torch.tensor(ds.stuff))
        assert (inst[stuff_pixels] == 0).all()
        assert torch.isin(sem[inst > 0], torch.tensor(ds.things)).all()
        n_stuff.append(len(set(sem.unique().tolist()) & set(ds.stuff)))
    assert min(n_stuff) >= 1 and max(n_stuff) >= 2
