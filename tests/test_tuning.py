"""decode.json of a run folder: written atomically, read back, clear errors when corrupt."""
from __future__ import annotations

import json

import pytest

from labkit.errors import LabkitError
from labkit.tuning import DECODE_NAME, read_decode_json, write_decode_json


def test_roundtrip_and_checkpoint_path(tmp_path):
    path = write_decode_json(tmp_path, {"bandwidth": 0.75, "split_components": True})
    assert path == tmp_path / DECODE_NAME
    assert json.loads(path.read_text()) == {"bandwidth": 0.75, "split_components": True}
    # a checkpoint inside the run folder names the same file
    assert read_decode_json(tmp_path / "model.pt") == {"bandwidth": 0.75, "split_components": True}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_absent_is_empty(tmp_path):
    assert read_decode_json(tmp_path) == {}


@pytest.mark.parametrize(
    "text, words",
    [("", "empty"), ("   \n", "empty"), ("{bandwidth: 1", "not valid JSON"), ("[1, 2]", "JSON object"), ("3", "JSON object")],
)
def test_corrupt_is_a_clear_error(tmp_path, text, words):
    (tmp_path / DECODE_NAME).write_text(text)
    with pytest.raises(LabkitError, match=words) as info:
        read_decode_json(tmp_path)
    assert DECODE_NAME in str(info.value)


def test_write_rejects_non_dict(tmp_path):
    with pytest.raises(LabkitError, match="dict"):
        write_decode_json(tmp_path, [("bandwidth", 1.0)])
    with pytest.raises(LabkitError, match="names"):
        write_decode_json(tmp_path, {"": 1.0})
    assert not (tmp_path / DECODE_NAME).exists()
