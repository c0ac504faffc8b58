"""Class metadata of an instance folder: ``DIR/classes.json``.

Accepted forms:

1. A list of class names, e.g. ``["cell"]`` or ``["background", "cell", "debris"]``.
   Class ids are list positions; background (id 0) is prepended unless the
   first name is one of ``background``, ``bg``, ``_background_``,
   ``__background__`` (any case). Every class is a thing.
2. An object ``{"classes": [...], "things": [...], "stuff": [...]}`` with
   ``classes`` as in 1. ``things`` and ``stuff`` hold class ids or names;
   without ``things``, every class not listed in ``stuff`` is a thing.

Without a ``classes.json`` a folder is class-agnostic: ``["background", "object"]``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import DataError

BACKGROUND_NAMES = {"background", "bg", "_background_", "__background__"}


@dataclass
class ClassInfo:
    """Class names (``[0]`` is background) and which class ids are things or stuff."""

    names: list[str] = field(default_factory=lambda: ["background", "object"])
    things: list[int] = field(default_factory=lambda: [1])
    stuff: list[int] = field(default_factory=list)


def _class_ids(values: Any, names: list[str], key: str, path: Path) -> list[int]:
    if not isinstance(values, list):
        raise DataError(f"{path}: {key!r} must be a list of class ids or names, got {type(values).__name__}")
    ids = []
    for v in values:
        if isinstance(v, str) and v in names:
            ids.append(names.index(v))
        elif isinstance(v, int) and not isinstance(v, bool) and 1 <= v < len(names):
            ids.append(v)
        else:
            raise DataError(f"{path}: {key!r} entry {v!r} is not a class name or an id in 1..{len(names) - 1}")
    return sorted(set(ids))


def parse_classes(data: Any, path: Path) -> ClassInfo:
    """:class:`ClassInfo` from the decoded JSON of ``path`` (see the module docstring)."""
    spec = data if isinstance(data, dict) else {"classes": data}
    names = spec.get("classes")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(
            f"{path}: expected a list of class names or {{\"classes\": [...], \"things\": [...], "
            f"\"stuff\": [...]}}, got {data!r:.200}"
        )
    if names[0].lower() not in BACKGROUND_NAMES:
        names = ["background", *names]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names must be unique, got {names}")
    if len(names) < 2:
        raise DataError(f"{path}: no class besides background")
    stuff = _class_ids(spec.get("stuff", []), names, "stuff", path)
    if "things" in spec:
        things = _class_ids(spec["things"], names, "things", path)
    else:
        things = [c for c in range(1, len(names)) if c not in stuff]
    if set(things) & set(stuff):
        raise DataError(f"{path}: classes {sorted(set(things) & set(stuff))} are listed as both things and stuff")
    return ClassInfo(names=names, things=things, stuff=stuff)


def read_classes(path: Path) -> ClassInfo:
    """Read ``classes.json``; the class-agnostic default when the file does not exist."""
    if not path.is_file():
        return ClassInfo()
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    return parse_classes(data, path)
