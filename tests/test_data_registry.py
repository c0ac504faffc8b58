"""load_dataset / load_images: spec parsing and the errors a user sees."""
from __future__ import annotations

import pytest

from labkit.data import SyntheticScenes, load_dataset, load_images
from labkit.errors import DataError, UnknownKeyError


def test_synthetic_specs():
    ds = load_dataset("synthetic:digits:test", num_samples=2)
    assert isinstance(ds, SyntheticScenes) and ds.family.name == "digits" and ds.split == "test" and len(ds) == 2
    assert load_images("synthetic:sticks").split == "test"
    assert load_images("synthetic:sticks:train").split == "train"
    for bad in ("synthetic:", "synthetic:shapes:val:extra"):
        with pytest.raises(DataError, match="synthetic:NAME"):
            load_dataset(bad)
    with pytest.raises(UnknownKeyError, match="holdout"):
        load_dataset("synthetic:shapes:holdout")


def test_paths_that_are_not_datasets(tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    with pytest.raises(DataError, match="notes.txt"):
        load_dataset(note)
    with pytest.raises(DataError, match="no_such_dir"):
        load_images(tmp_path / "no_such_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty contains no images"):
        load_images(tmp_path / "empty")
