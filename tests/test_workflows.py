"""workflows.training_transform: crops for image folders, flips only where mirrored data is still data."""
import torch

from labkit.data.synthetic import FAMILIES
from labkit.data.transforms import RandomCrop, RandomFlip
from labkit.workflows import training_transform


def kinds(transform) -> list[type]:
    return [type(step) for step in transform.transforms]


def test_synthetic_scenes_are_flipped_unless_the_family_has_a_handedness():
    assert not FAMILIES["digits"].mirror_symmetric
    assert kinds(training_transform("synthetic:digits", 128)) == []
    assert kinds(training_transform("synthetic:digits:val", 128)) == []
    for name in ("shapes", "sticks", "panoptic"):
        assert FAMILIES[name].mirror_symmetric
        assert kinds(training_transform(f"synthetic:{name}", 128)) == [RandomFlip]


def test_image_folders_are_cropped_then_flipped(tmp_path):
    transform = training_transform(tmp_path, 32)
    assert kinds(transform) == [RandomCrop, RandomFlip]
    sample = {"image": torch.rand(1, 50, 40), "instances": torch.zeros(50, 40, dtype=torch.int64)}
    assert transform(sample)["image"].shape == (1, 32, 32)
