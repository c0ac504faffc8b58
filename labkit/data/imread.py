"""Read image and label files (PNG, TIFF, JPEG) into numpy arrays, with clear errors.

TIFF goes through ``tifffile``, everything else through Pillow. Any failure
to read raises :class:`DataError` naming the file. 16-bit PNGs are read as
``uint16`` (single channel; store 16-bit colour images as TIFF).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from labkit.data.normalize import to_channels_last
from labkit.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png", ".tif", ".tiff")

_READ_ERRORS = (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError, SyntaxError)


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an array (palette and CMYK images are converted to RGB)."""
    path = Path(path)
    try:
        if _is_tiff(path):
            return np.asarray(tifffile.imread(path)).squeeze()
        with Image.open(path) as img:
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
            return np.asarray(img)
    except _READ_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def read_labels(path: str | Path) -> np.ndarray:
    """A label file (instance ids or classes) as an array; palette PNGs give their indices."""
    path = Path(path)
    try:
        if _is_tiff(path):
            arr = np.asarray(tifffile.imread(path)).squeeze()
        else:
            with Image.open(path) as img:
                if img.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"):
                    raise DataError(
                        f"{path}: a mask must be a single-channel image of integer ids, got mode {img.mode!r}"
                    )
                arr = np.asarray(img)
    except _READ_ERRORS as err:
        raise DataError(f"cannot read mask {path}: {err}") from err
    return arr


def probe_image(path: str | Path) -> tuple[int, int, int]:
    """``(height, width, channels)`` of an image file, reading as little as possible."""
    path = Path(path)
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                shape = tuple(d for d in tif.series[0].shape if d != 1) or (1, 1)
            height, width, channels = to_channels_last(
                np.broadcast_to(np.uint8(0), shape), str(path)
            ).shape
            return height, width, channels
        with Image.open(path) as img:
            width, height = img.size
            bands = len(img.getbands()) if img.mode != "P" else 3
    except _READ_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}") from err
    return height, width, 1 if bands <= 2 else 3


def probe_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of a label or image file."""
    return probe_image(path)[:2]
