"""The ``nuclei`` synthetic family: 16-bit counts, touching nuclei, the folder reader's normalisation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from labkit.data.normalize import image_to_tensor
from labkit.data.synthetic import FAMILIES, SyntheticScenes, nuclei, scene_rng


def test_registered_and_contract():
    assert "nuclei" in FAMILIES
    ds = SyntheticScenes("nuclei", "train", num_samples=3, size=64)
    assert ds.in_channels == 1 and ds.class_names == ["background", "nucleus"]
    s = ds[1]
    assert s["image"].shape == (1, 64, 64) and s["image"].dtype.is_floating_point
    assert float(s["image"].min()) >= 0.0 and float(s["image"].max()) <= 1.0
    assert s["instances"].shape == (64, 64) and int(s["instances"].max()) >= 3
    assert ((s["semantic"] > 0) == (s["instances"] > 0)).all()
    assert np.array_equal(ds[1]["image"].numpy(), s["image"].numpy())  # deterministic


def test_raw_counts_are_16_bit_with_noise_and_match_folder_normalisation():
    counts, instances = nuclei.raw_scene(scene_rng("nuclei", "train", 0), 256, 256)
    assert counts.dtype == np.uint16 and instances.dtype == np.int64
    assert int(counts.max()) > 255  # not an 8-bit range
    # density as documented: 30-40 nuclei on 256 x 256 (a few may be rejected when packing)
    assert 20 <= len(np.unique(instances)) - 1 <= 40
    # noise: background is not constant
    assert counts[instances == 0].std() > 3
    # the scene is the folder reader's normalisation of the counts
    s = nuclei.generate(scene_rng("nuclei", "train", 0), 256, 256, "train")
    assert np.allclose(s.image, image_to_tensor(counts).numpy())


def test_nuclei_touch_and_vary_in_brightness():
    counts, instances = nuclei.raw_scene(scene_rng("nuclei", "val", 3), 256, 256)
    # touching: some nucleus has a pixel 4-adjacent to a pixel of another nucleus
    a, b = instances[:, :-1], instances[:, 1:]
    assert ((a > 0) & (b > 0) & (a != b)).any()
    ids = np.unique(instances[instances > 0])
    means = ndimage.mean(counts.astype(float), instances, ids)
    assert means.max() / means.min() > 1.5  # varied stain levels
    # uneven background: two far corners differ in their local mean
    bg = np.where(instances == 0, counts.astype(float), np.nan)
    corners = [np.nanmean(bg[:64, :64]), np.nanmean(bg[-64:, -64:]), np.nanmean(bg[:64, -64:]), np.nanmean(bg[-64:, :64])]
    assert max(corners) / min(corners) > 1.05


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_splits_disjoint(split):
    other = {"train": "val", "val": "test", "test": "train"}[split]
    a = SyntheticScenes("nuclei", split, num_samples=2, size=64)[0]["image"]
    b = SyntheticScenes("nuclei", other, num_samples=2, size=64)[0]["image"]
    assert not np.array_equal(a.numpy(), b.numpy())
