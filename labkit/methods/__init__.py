"""Method registry: ``labkit.methods.get(key)`` and ``labkit.methods.available()``.

Each method lives in its own module and registers itself with
:func:`register`; importing this package imports them all.
"""
from __future__ import annotations

import importlib
from typing import Any

from labkit.errors import UnknownKeyError
from labkit.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}

# Modules that define methods, imported lazily on first lookup.
_METHOD_MODULES = (
    "labkit.methods.semantic",
    "labkit.methods.baselines",
    "labkit.methods.discriminative",
    "labkit.methods.recurrent",
    "labkit.methods.dvis",
    "labkit.methods.hle",
    "labkit.methods.irnet",
)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a :class:`Method` subclass under ``cls.key``."""
    _REGISTRY[cls.key] = cls
    return cls


def _load_all() -> None:
    for name in _METHOD_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a method module not written yet
            if exc.name != name:
                raise


def available() -> list[str]:
    """The registered method keys, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get(key: str, *, folder: bool = False, **overrides: Any) -> Method:
    """The method registered under ``key``, with its defaults overridden by keyword.

    ``folder=True``: the method's :attr:`~Method.folder_params` first (training
    on an image folder), then ``overrides``.
    """
    _load_all()
    try:
        cls = _REGISTRY[key]
    except KeyError:
        raise UnknownKeyError(
            f"unknown method {key!r}; available methods: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return cls(**({**cls.folder_params, **overrides} if folder else overrides))


__all__ = ["Method", "available", "get", "register"]
