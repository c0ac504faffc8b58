"""What a synthetic scene family is: class metadata plus a deterministic generator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np


class Scene(NamedTuple):
    """One generated scene: ``image`` float32 ``[C,H,W]`` in ``[0,1]``, int64 ``instances`` and ``semantic``."""

    image: np.ndarray
    instances: np.ndarray
    semantic: np.ndarray


Generator = Callable[[np.random.Generator, int, int, str], Scene]


@dataclass(frozen=True)
class Family:
    """A family of synthetic scenes.

    ``generate(rng, height, width, split)`` draws one scene from ``rng`` alone
    (``split`` lets a family keep disjoint source pools per split, as
    ``digits`` does).  ``mirror_symmetric`` says whether a mirrored scene is
    still a scene of the family (flips are then a fair augmentation; a
    mirrored digit is not a digit).
    """

    name: str
    description: str
    class_names: tuple[str, ...]
    things: tuple[int, ...]
    stuff: tuple[int, ...]
    in_channels: int
    generate: Generator
    mirror_symmetric: bool = True
