"""Data: synthetic scene families, readers for user folders / COCO / VOC / SBD / Cityscapes,
joint transforms, and the sample contract.

Every dataset is a ``torch.utils.data.Dataset`` of samples (``contract.py``)
with ``class_names``, ``num_classes``, ``things``, ``stuff`` and ``in_channels``.
Open one with :func:`load_dataset` (``"synthetic:shapes"``, ``"synthetic:digits:val"``,
a folder, or a COCO ``.json``).
"""
from labkit.data.base import SegmentationDataset, image_labels
from labkit.data.cityscapes import CityscapesInstances
from labkit.data.classes import ClassInfo, read_classes
from labkit.data.coco import CocoDataset
from labkit.data.contract import IGNORE_INDEX, check_sample, collate, ground_truth
from labkit.data.folder import ImageFolder, InstanceFolder
from labkit.data.normalize import image_to_tensor, labels_to_tensor, percentile_normalize
from labkit.data.registry import load_dataset, load_images
from labkit.data.synthetic import FAMILIES, SPLITS, SyntheticScenes
from labkit.data.transforms import Compose, RandomCrop, RandomFlip, RandomScale
from labkit.data.voc import SBDInstances, VOCInstances

__all__ = [
    "FAMILIES",
    "IGNORE_INDEX",
    "SPLITS",
    "CityscapesInstances",
    "ClassInfo",
    "CocoDataset",
    "Compose",
    "ImageFolder",
    "InstanceFolder",
    "RandomCrop",
    "RandomFlip",
    "RandomScale",
    "SBDInstances",
    "SegmentationDataset",
    "SyntheticScenes",
    "VOCInstances",
    "check_sample",
    "collate",
    "ground_truth",
    "image_labels",
    "image_to_tensor",
    "labels_to_tensor",
    "load_dataset",
    "load_images",
    "percentile_normalize",
    "read_classes",
]
