"""Open a dataset from a string: ``synthetic:NAME[:SPLIT]``, a folder, or a COCO JSON file.

Folders are recognised by their layout:

==============  =================================================================
instance folder ``DIR/images`` + ``DIR/masks`` (or ``DIR/<split>/images`` + ``masks``)
Pascal VOC      ``DIR/VOCdevkit/VOC20xx``, ``DIR/VOCdevkit`` or ``DIR = .../VOC20xx``
SBD             ``DIR/img``, ``DIR/cls``, ``DIR/inst``
Cityscapes      ``DIR/leftImg8bit`` + ``DIR/gtFine``
==============  =================================================================

A ``SPLIT`` inside a synthetic spec wins over the ``split`` argument (so
``synthetic:shapes:val`` means val even where a command defaults to test).
Pascal VOC and SBD have no public test annotations: split ``test`` reads ``val``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from labkit.data.base import SegmentationDataset, Transform
from labkit.errors import DataError

log = logging.getLogger(__name__)

SYNTHETIC_PREFIX = "synthetic:"


def parse_synthetic(spec: str) -> tuple[str, Optional[str]]:
    """``"synthetic:NAME[:SPLIT]"`` -> ``(NAME, SPLIT or None)``."""
    parts = spec[len(SYNTHETIC_PREFIX):].split(":")
    if len(parts) > 2 or not parts[0]:
        raise DataError(f"bad synthetic dataset spec {spec!r}; expected synthetic:NAME or synthetic:NAME:SPLIT")
    return parts[0], parts[1] if len(parts) == 2 and parts[1] else None


def _voc_root(path: Path) -> Optional[tuple[Path, str]]:
    """``(root for torchvision, year)`` if ``path`` is (inside) a VOC tree."""
    if path.name.startswith("VOC") and path.name[3:].isdigit() and (path / "SegmentationObject").is_dir():
        return path.parent.parent, path.name[3:]
    devkit = path if path.name == "VOCdevkit" else path / "VOCdevkit"
    years = sorted(p.name[3:] for p in devkit.glob("VOC20[0-9][0-9]") if (p / "SegmentationObject").is_dir())
    if not years:
        return None
    return devkit.parent, "2012" if "2012" in years else years[-1]


def _voc_split(split: Optional[str]) -> str:
    if split == "test":
        log.warning("Pascal VOC / SBD have no public test annotations; reading split 'val'")
        return "val"
    return split or "train"


def _open_folder(path: Path, split: Optional[str], transform: Optional[Transform], **kw: Any) -> SegmentationDataset:
    from labkit.data.cityscapes import CityscapesInstances
    from labkit.data.folder import InstanceFolder
    from labkit.data.voc import SBDInstances, VOCInstances

    if (path / "images").is_dir():
        return InstanceFolder(path, transform=transform, **kw)
    if split and (path / split / "images").is_dir():
        return InstanceFolder(path / split, transform=transform, **kw)
    voc = _voc_root(path)
    if voc is not None:
        root, year = voc
        return VOCInstances(root, split=_voc_split(split), year=kw.pop("year", year), transform=transform, **kw)
    if all((path / d).is_dir() for d in ("img", "cls", "inst")):
        return SBDInstances(path, split=_voc_split(split), transform=transform, **kw)
    if (path / "leftImg8bit").is_dir() and (path / "gtFine").is_dir():
        return CityscapesInstances(path, split=split or "train", transform=transform, **kw)
    raise DataError(
        f"{path}: unrecognised dataset layout; expected DIR/images + DIR/masks (instance folder), "
        "VOCdevkit/VOC20xx (Pascal VOC), img/cls/inst (SBD) or leftImg8bit + gtFine (Cityscapes)"
    )


def load_dataset(
    spec: str | Path, split: Optional[str] = None, transform: Optional[Transform] = None, **kw: Any
) -> SegmentationDataset:
    """The dataset named by ``spec`` (see the module docstring); ``kw`` go to its constructor.

    Raises :class:`~labkit.errors.UnknownKeyError` for an unknown synthetic
    family and :class:`~labkit.errors.DataError` for a missing or unreadable path.
    """
    from labkit.data.coco import CocoDataset
    from labkit.data.synthetic import SyntheticScenes

    text = str(spec)
    if text.startswith(SYNTHETIC_PREFIX):
        family, spec_split = parse_synthetic(text)
        return SyntheticScenes(family, split=spec_split or split or "train", transform=transform, **kw)
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"dataset {path} does not exist")
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DataError(f"{path}: a dataset file must be a COCO annotation .json (or pass a folder)")
        return CocoDataset(path, transform=transform, **kw)
    return _open_folder(path, split, transform, **kw)


def load_images(spec: str | Path, transform: Optional[Transform] = None) -> SegmentationDataset:
    """Images to predict on: ``synthetic:NAME[:SPLIT]`` (default split test) or a folder of images.

    A folder is read from ``DIR/images`` when that exists (an instance folder),
    else from ``DIR`` itself; masks are not needed.
    """
    from labkit.data.folder import ImageFolder
    from labkit.data.synthetic import SyntheticScenes

    text = str(spec)
    if text.startswith(SYNTHETIC_PREFIX):
        family, split = parse_synthetic(text)
        return SyntheticScenes(family, split=split or "test", transform=transform)
    path = Path(text).expanduser()
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    return ImageFolder(path, transform=transform)
