"""Atomic writes leave either the old file or the new one, never a partial one."""
from __future__ import annotations

import json
import os

import pytest

from labkit.io import atomic_open, write_json


def test_write_json_roundtrip_and_permissions(tmp_path):
    target = tmp_path / "sub" / "m.json"
    write_json(target, {"a": 1, "b": [0.5]})
    assert json.loads(target.read_text()) == {"a": 1, "b": [0.5]}
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write('{"new": ')
            raise RuntimeError("crash half-way")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"], "temporary file left behind"
