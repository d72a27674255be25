"""Layer 2: datasets yielding (index, image, label) and augmentation presets."""

from invprop.data.datasets import (
    DATASETS,
    IMAGEFOLDER_PREFIX,
    DataSplits,
    IndexedDataset,
    build_datasets,
    dataset_names,
    load_source,
    scan_image_folder,
)
from invprop.data.transforms import AUGMENTATIONS, RandomDigitAugment, build_transforms

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "IMAGEFOLDER_PREFIX",
    "DataSplits",
    "IndexedDataset",
    "RandomDigitAugment",
    "build_datasets",
    "build_transforms",
    "dataset_names",
    "load_source",
    "scan_image_folder",
]
