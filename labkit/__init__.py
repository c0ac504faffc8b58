"""labkit: a lab for proposal-free instance segmentation by pixel embeddings.

Subpackages: ``data`` (synthetic scenes, readers, transforms), ``models``
(UNet, ResNet backbones, heads), ``losses``, ``clustering`` (mean shift
family), ``metrics``, ``methods`` (one module per paper), ``viz``; plus
``train`` (the one training loop) and ``cli`` (the ``labkit`` command).
"""
from labkit.errors import LabkitError

__version__ = "0.1.0"
__all__ = ["LabkitError", "__version__"]
