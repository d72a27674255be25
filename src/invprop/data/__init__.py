"""Layer 2: datasets yielding (index, image, label), augmentation presets, and the data settings that build the
splits."""

from invprop.data.batch_transforms import BATCH_AUGMENTATIONS, BatchAugment, build_batch_augment
from invprop.data.datasets import (
    DATASETS,
    IMAGEFOLDER_PREFIX,
    IndexedDataset,
    dataset_names,
    load_source,
    scan_image_folder,
)
from invprop.data.decode_cache import to_tensor_images
from invprop.data.exemplar_augment import ExemplarAugment  # (importing it registers the exemplar preset)
from invprop.data.image_sequences import ImageFiles, TensorImages
from invprop.data.loader import EpochBatchSampler, TensorBatches, epoch_order, epoch_plan
from invprop.data.splits import PIPELINES, DataSettings, DataSplits, InputNeeds, build_datasets, datasets_from
from invprop.data.transforms import AUGMENTATIONS, RandomDigitAugment, build_transforms

__all__ = [
    "AUGMENTATIONS",
    "BATCH_AUGMENTATIONS",
    "BatchAugment",
    "EpochBatchSampler",
    "ExemplarAugment",
    "epoch_plan",
    "ImageFiles",
    "PIPELINES",
    "TensorBatches",
    "TensorImages",
    "build_batch_augment",
    "epoch_order",
    "to_tensor_images",
    "DATASETS",
    "DataSettings",
    "datasets_from",
    "InputNeeds",
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
