"""Errors that labkit raises for problems with the user's input.

A :class:`LabkitError` means "the input is wrong", never "labkit is broken":
the command line prints its message alone, without a traceback.
"""
from __future__ import annotations


class LabkitError(Exception):
    """A user-facing error whose message names the offending file, key or value."""


class DataError(LabkitError, ValueError):
    """A dataset, image or mask that does not follow the data contract."""


class UnknownKeyError(LabkitError, KeyError):
    """An unknown method key, synthetic family or other registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class NonFiniteLossError(LabkitError, FloatingPointError):
    """Training produced a NaN or infinite loss."""
