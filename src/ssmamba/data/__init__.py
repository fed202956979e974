"""Datasets, transforms and synthetic data for pathology image classification.

``load_dataset(source, split=..., transform=...)`` reads an image folder, a CSV manifest, a CSV of nucleus points,
a MedMNIST ``.npz`` or PatchCamelyon ``.h5`` files, and returns an :class:`ImageDataset` whose items are
``(transform(rgb_pil_image), label_index)``. Each kind of source has one reader, registered with
``register_reader`` (see :mod:`ssmamba.data.load`).
"""

from ssmamba.data.dataset import ImageDataset
from ssmamba.data.imageio import Padding
from ssmamba.data.load import ReadOptions, SourceKind, detect_kind, load_dataset, load_unlabelled, register_reader
from ssmamba.data.records import ArrayItem, ImageFile, PointCrop, Record
from ssmamba.data.splits import Split

__all__ = [
    "ArrayItem", "ImageDataset", "ImageFile", "Padding", "PointCrop", "ReadOptions", "Record", "SourceKind", "Split",
    "detect_kind", "load_dataset", "load_unlabelled", "register_reader",
]
