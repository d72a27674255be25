"""Layer 2: datasets yielding (index, image, label) and augmentation presets."""

from invprop.data.datasets import (
    DATASETS,
    IMAGEFOLDER_PREFIX,
    PIPELINES,
    DataSplits,
    IndexedDataset,
    build_datasets,
    dataset_names,
    load_source,
    scan_image_folder,
)
from invprop.data.batch_transforms import BATCH_AUGMENTATIONS, BatchAugment, build_batch_augment
from invprop.data.image_sequences import ImageFiles, TensorImages, to_tensor_images
from invprop.data.loader import EpochBatchSampler, TensorBatches, epoch_order, epoch_plan
from invprop.data.transforms import AUGMENTATIONS, RandomDigitAugment, build_transforms

__all__ = [
    "AUGMENTATIONS",
    "BATCH_AUGMENTATIONS",
    "BatchAugment",
    "EpochBatchSampler",
    "epoch_plan",
    "ImageFiles",
    "PIPELINES",
    "TensorBatches",
    "TensorImages",
    "build_batch_augment",
    "epoch_order",
    "to_tensor_images",
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
