"""Decode-parameter files of a run folder: ``RUN_DIR/decode.json``.

``labkit tune`` sweeps a method's decode parameters (``Method.decode_grid()``)
on validation images and writes the best values here; ``labkit evaluate`` and
``labkit predict`` read them by default, and ``--set KEY=VALUE`` still wins.

The file is one JSON object ``{"param": value, ...}``; it is written
atomically (:func:`labkit.io.write_json`), so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.io import write_json

DECODE_NAME = "decode.json"


def _run_dir(run_dir: str | os.PathLike) -> Path:
    """The run folder itself when given a checkpoint file inside it (``RUN_DIR/model.pt``)."""
    path = Path(run_dir)
    return path.parent if path.suffix == ".pt" else path


def decode_path(run_dir: str | os.PathLike) -> Path:
    """``RUN_DIR/decode.json`` (``run_dir`` may also be a checkpoint file inside the run folder)."""
    return _run_dir(run_dir) / DECODE_NAME


def write_decode_json(run_dir: str | os.PathLike, params: dict) -> Path:
    """Write ``params`` (decode parameter -> value) to ``RUN_DIR/decode.json`` atomically; return the path."""
    if not isinstance(params, dict):
        raise LabkitError(f"decode parameters must be a dict of name -> value, got {type(params).__name__}")
    bad = [k for k in params if not isinstance(k, str) or not k]
    if bad:
        raise LabkitError(f"decode parameter names must be non-empty strings, got {bad!r}")
    path = decode_path(run_dir)
    write_json(path, params)
    return path


def read_decode_json(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The decode parameters in ``RUN_DIR/decode.json``; ``{}`` when the file does not exist.

    Raises:
        LabkitError: the file is empty, not valid JSON, or not a JSON object.
    """
    path = decode_path(run_dir)
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise LabkitError(f"{path} is empty; delete it or run `labkit tune` again to rewrite it")
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabkitError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}); delete it or run `labkit tune` again"
        ) from None
    if not isinstance(params, dict):
        raise LabkitError(
            f"{path} must hold a JSON object of decode parameters, got {type(params).__name__}; "
            "delete it or run `labkit tune` again"
        )
    return params


__all__ = ["DECODE_NAME", "decode_path", "read_decode_json", "write_decode_json"]
