"""From settings to data: the ``data`` settings section, and the training and evaluation splits built from it.

:func:`datasets_from` is the one way the trainer, the evaluation protocols and the benchmarks turn ``data``
settings into :class:`DataSplits`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invprop.data.batch_transforms import BatchAugment, build_batch_augment
from invprop.data.datasets import (
    IMAGEFOLDER_PREFIX,
    IndexedDataset,
    Source,
    _targets,
    load_source,
    subset_indices,
    take_subset,
)
from invprop.data.decode_cache import check_image_files, to_tensor_images
from invprop.data.dicom import FILE_WINDOW, parse_window
from invprop.data.image_sequences import ImageFiles, ImageSequence, TensorImages
from invprop.data.multi_crop import (
    SMALL_CROP_SCALE,
    SmallCrops,
    default_small_side,
    small_crop_augment,
    small_crop_transform,
)
from invprop.data.transforms import AUGMENTATIONS, Normalize, Transform, build_transforms
from invprop.errors import DataError
from invprop.settings import AT_LEAST_ONE, NON_NEGATIVE, UNIT_INTERVAL, setting

#: Data pipelines: ``tensor`` decodes once into a uint8 tensor and augments whole batches on the training device;
#: ``per_image`` runs torchvision transforms per image in DataLoader workers; ``auto`` picks ``tensor`` for the
#: registered small-image datasets and for image folders whose images, decoded at the working size, fit
#: :data:`TENSOR_FOLDER_MAX_BYTES`, and ``per_image`` for larger ones.
PIPELINES = ("auto", "tensor", "per_image")
#: Largest decoded image folder the ``auto`` pipeline keeps in memory as one uint8 tensor (else: per image).
TENSOR_FOLDER_MAX_BYTES = 4 * 2**30
#: Most images ``data.holdout`` keeps out of training.
HOLDOUT_MAX = 2048
#: Seed of the held-out images' choice (fixed: every method of a comparison holds out the same images).
HOLDOUT_SEED = 1


@dataclass
class DataSettings:
    """The ``data`` section: which images, how they are read and augmented."""

    name: str = setting("digits", "dataset: a registered name (invprop presets lists them) or imagefolder:PATH")
    subset: int | None = setting(None, "train on a fixed, stratified subset of this many training images (null = all)",
                                 bounds=AT_LEAST_ONE)  # fmt: skip
    root: str = setting("~/.cache/invprop/data", "folder holding the built-in torchvision-format datasets",
                        resumable=True)  # fmt: skip
    download: bool = setting(
        True,
        "fetch a missing built-in dataset (cifar10, cifar100, svhn, stl10, mnist) into data.root, through "
        "torchvision's download and checksums (false: only read what is there)",
        resumable=True,
    )
    augment: str | None = setting(None, "augmentation preset; null = the dataset's own", choices=AUGMENTATIONS)
    image_size: int | None = setting(None, "image side for image folders; null = the dataset's own (32 for folders)",
                                     bounds=AT_LEAST_ONE)  # fmt: skip
    num_workers: int = setting(0, "DataLoader worker processes of the per-image pipeline (0 = load in the training process)",
                               bounds=NON_NEGATIVE, resumable=True)  # fmt: skip
    pipeline: str = setting(
        "auto",
        "tensor (decode once, augment whole batches on the training device), per_image (torchvision transforms in "
        "workers) or auto (tensor for the built-in small-image datasets and for image folders that fit in 4 GiB "
        "decoded at data.image_size, per_image for larger folders)",
        choices=PIPELINES,
    )
    cache_dir: str | None = setting(
        "~/.cache/invprop/images", "where decoded image folders are cached (null = no cache)", resumable=True
    )
    strict: bool = setting(False, "fail on unreadable image files, naming them (default: skip them with a warning)",
                          resumable=True)  # fmt: skip
    small_crops: int = setting(
        0, "multi-crop: small crops per image besides the method's full-size views (SwAV: 6 on ImageNet); only "
        "methods that use them accept more than 0", bounds=NON_NEGATIVE,
    )  # fmt: skip
    small_crop_size: int | None = setting(
        None, "side of the small crops; null = 96/224 of the image side (SwAV's ratio)", bounds=AT_LEAST_ONE
    )
    small_crop_scale: list[float] | None = setting(
        None, "[low, high], the range of the image area a small crop covers; null = SwAV's 0.05 to 0.14"
    )
    channels: int | None = setting(
        None,
        "image channels (bands): null = from the files (3 for ordinary images; an image folder of .npy arrays or "
        "multi-band TIFF has its own); set, data with another count is refused",
        bounds=AT_LEAST_ONE,
    )
    dicom_window: str = setting(
        "file",
        "how DICOM files (.dcm) in an image folder become 8-bit images: file (each file's own WindowCenter/Width, its "
        "full range without one), full (each image's minimum to maximum) or CENTER,WIDTH in the modality's units "
        "(e.g. 40,400: CT soft tissue)",
    )
    holdout: float = setting(
        0.1,
        "share of an unlabelled dataset (an image folder without a test split) kept out of training, at most "
        "2,048 images: the held-out images the label-free criteria are computed on (0: train on every image)",
        bounds=UNIT_INTERVAL,
    )


@dataclass(frozen=True)
class InputNeeds:
    """What an encoder asks of its inputs, which the data then honours.

    Attributes:
        folder_size: the side of image-folder data when ``data.image_size`` is null (a timm model's native side);
            None = 32.
        normalization: ``(mean, std)`` instead of the dataset's own (what pretrained weights expect).
        side_multiple: crop sides must be multiples of this (a ViT's patch side).
    """

    folder_size: int | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    side_multiple: int = 1


@dataclass
class DataSplits:
    """What training and evaluation need from a dataset.

    Attributes:
        train: augmented training images; their indices are the bank rows.
        memory: labelled training images with the eval transform (the kNN monitor's reference set), or None.
        test: held-out images with the eval transform, or None.
        num_classes: 0 when unlabelled (turns the kNN monitor off).
        in_channels: image channels.
        train_plain: the training images with the eval transform (for embedding and search; labelled or not).
        train_images: the training images as one tensor, when the tensor pipeline is used (else None).
        skipped_files: unreadable image files left out (empty unless the data is a folder with broken files).
        batch_augment: the batch counterpart of the training transform, with ``train_images``.
        small_crops: the multi-crop small crops (None: none), with ``small_transform`` (per-image pipeline) or
            ``small_augment`` (tensor pipeline) making them.
        mean, std: the per-channel normalisation of every split.
        image_size: the side of the training images (the views the encoder sees).
        holdout: images of an unlabelled dataset kept out of training (eval transform), for the label-free
            criteria; None when the dataset has a held-out split of its own, or none.
        plain_transform: the eval transform of one image read from a file (None: the images are not files).
    """

    train: IndexedDataset
    memory: IndexedDataset | None
    test: IndexedDataset | None
    num_classes: int
    in_channels: int
    train_plain: IndexedDataset | None = None
    train_images: TensorImages | None = None
    batch_augment: BatchAugment | None = None
    skipped_files: list[str] = dataclasses.field(default_factory=list)
    small_crops: SmallCrops | None = None
    small_transform: Transform | None = None
    small_augment: BatchAugment | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    image_size: int = 0
    holdout: IndexedDataset | None = None
    plain_transform: Transform | None = None

    @property
    def pipeline(self) -> str:
        return "tensor" if self.train_images is not None else "per_image"

    @property
    def labelled(self) -> bool:
        return self.num_classes > 0 and self.memory is not None and self.test is not None


def _drop_unreadable(source: Source, strict: bool, cache: Path | None) -> tuple[Source, list[str]]:
    """Check the image files of every split once; unreadable ones are skipped (or refused when ``strict``)."""
    skipped: list[str] = []
    checked: dict[int, Any] = {}
    for split in ("train", "memory", "test"):
        files = getattr(source, split)
        if isinstance(files, ImageFiles):
            if id(files) not in checked:
                kept, bad = check_image_files(files, strict, cache)
                checked[id(files)] = kept
                skipped += bad
            source = dataclasses.replace(source, **{split: checked[id(files)]})
    return source, skipped


def build_datasets(
    name: str,
    root: str | os.PathLike[str] = ".",
    augment: str | None = None,
    image_size: int | None = None,
    pipeline: str = "per_image",
    cache_dir: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    strict: bool = False,
    download: bool = False,
    small_crops: SmallCrops | None = None,
    needs: InputNeeds = InputNeeds(),
    holdout: float = 0.0,
    dicom_window: str = FILE_WINDOW,
    channels: int | None = None,
) -> DataSplits:
    """Datasets for training (augmented) and evaluation (deterministic) of ``name``.

    Args:
        name: a registered dataset or ``imagefolder:PATH``.
        root: where torchvision-format datasets live.
        augment: augmentation preset; None takes the dataset's own.
        image_size: output side for image-folder data; None takes the dataset's own.
        pipeline: ``tensor``, ``per_image`` or ``auto`` (see :data:`PIPELINES`).
        cache_dir: where decoded image folders are cached for the tensor pipeline (None: no disk cache).
        subset: train on a fixed, stratified subset of this many training images (the kNN monitor's reference set
            is the same subset when it is the training split); None = all.
        strict: fail on unreadable image files (naming them) instead of skipping them with a warning.
        download: fetch a missing built-in dataset into ``root`` (torchvision's download and checksums).
        small_crops: multi-crop small crops to make besides the training views (None: none).
        needs: what the encoder asks of its inputs (side of image folders, normalisation, side multiple).
        holdout: share of an unlabelled dataset without a test split kept out of training (at most
            :data:`HOLDOUT_MAX` images; none when fewer than 2 would be kept or left).
        dicom_window: how DICOM files in an image folder are windowed (:func:`invprop.data.dicom.parse_window`).
        channels: the image channels the data must have (None: whatever it has).
    """
    if pipeline not in PIPELINES:
        raise DataError(f"data pipeline must be one of {', '.join(PIPELINES)}; got {pipeline!r}")
    if image_size is None and name.startswith(IMAGEFOLDER_PREFIX):
        image_size = needs.folder_size
    parse_window(dicom_window)
    source = load_source(name, root, image_size, augment, download, dicom_window)
    if channels is not None and source.in_channels != channels:
        raise DataError(f"data.channels={channels}, but the images of {name!r} have {source.in_channels} channel(s); "
                        "set data.channels to that (or null to take it from the files)")  # fmt: skip
    if needs.normalization is not None:
        mean, std = (_per_channel(values, source.in_channels) for values in needs.normalization)
        source = dataclasses.replace(source, mean=mean, std=std)
    size = image_size or source.image_size
    preset = augment or source.augment
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    source, skipped = _drop_unreadable(source, strict, cache)
    if small_crops is not None and small_crops.size is None:
        small_crops = dataclasses.replace(small_crops, size=default_small_side(size, needs.side_multiple))
    if small_crops is not None and small_crops.size is not None and small_crops.size % needs.side_multiple:
        raise DataError(
            f"data.small_crop_size={small_crops.size} is not a multiple of the encoder's patch side "
            f"{needs.side_multiple}; choose a multiple (or null for SwAV's ratio, rounded)"
        )
    if len(source.train) < 2:
        raise DataError(f"dataset {name!r} has {len(source.train)} training image(s); at least 2 are needed")
    source, held = _hold_out(source, holdout)
    if subset is not None:
        chosen = take_subset(source.train, subset_indices(_targets(source.train), subset))
        memory = chosen if source.memory is source.train else source.memory
        source = dataclasses.replace(source, train=chosen, memory=memory)
    files = isinstance(source.train, ImageFiles)
    if pipeline == "auto":
        pipeline = (
            "tensor"
            if source.small or (files and fits_in_memory(len(source.train), size, source.in_channels))
            else "per_image"
        )
    if pipeline == "per_image":
        pair = build_transforms(preset, size, source.mean, source.std)
        return DataSplits(
            skipped_files=skipped,
            mean=source.mean,
            std=source.std,
            image_size=size,
            small_crops=small_crops,
            small_transform=small_crop_transform(pair.train, small_crops) if small_crops is not None else None,
            train=IndexedDataset(source.train, pair.train),
            train_plain=IndexedDataset(source.train, pair.eval),
            memory=IndexedDataset(source.memory, pair.eval) if source.memory is not None else None,
            test=IndexedDataset(source.test, pair.eval) if source.test is not None else None,
            holdout=IndexedDataset(held, pair.eval) if held is not None else None,
            plain_transform=pair.eval if files else None,
            num_classes=source.num_classes,
            in_channels=source.in_channels,
        )
    side = size if files else None  # a folder is decoded at the working size, whatever its files' sizes
    train = to_tensor_images(source.train, cache, side)
    shape = tuple(train.images.shape[2:])
    if shape != (size, size):
        raise DataError(
            f"the tensor pipeline needs {size}x{size} images, but {name!r} has {shape[1]}x{shape[0]}; "
            f"set data.image_size={shape[0]} or use --set data.pipeline=per_image"
        )
    normalize = Normalize(source.mean, source.std)
    memory = (
        train
        if source.memory is source.train
        else to_tensor_images(source.memory, cache, side)
        if source.memory is not None
        else None
    )
    test = to_tensor_images(source.test, cache, side) if source.test is not None else None
    held_images = to_tensor_images(held, cache, side) if held is not None else None
    batch_augment = build_batch_augment(preset, size, source.mean, source.std)
    return DataSplits(
        train=IndexedDataset(train, build_transforms(preset, size, source.mean, source.std).train),
        train_plain=IndexedDataset(train, normalize),
        memory=IndexedDataset(memory, normalize) if memory is not None else None,
        test=IndexedDataset(test, normalize) if test is not None else None,
        holdout=IndexedDataset(held_images, normalize) if held_images is not None else None,
        plain_transform=build_transforms(preset, size, source.mean, source.std).eval
        if isinstance(source.train, ImageFiles)
        else None,
        num_classes=source.num_classes,
        in_channels=source.in_channels,
        train_images=train,
        batch_augment=batch_augment,
        skipped_files=skipped,
        mean=source.mean,
        std=source.std,
        image_size=size,
        small_crops=small_crops,
        small_augment=small_crop_augment(batch_augment, small_crops) if small_crops is not None else None,
    )


def fits_in_memory(images: int, side: int, channels: int = 3) -> bool:
    """Whether ``images`` images of ``side`` x ``side`` fit the tensor pipeline (:data:`TENSOR_FOLDER_MAX_BYTES`)."""
    return images * channels * side * side <= TENSOR_FOLDER_MAX_BYTES


def _hold_out(source: Source, share: float) -> tuple[Source, ImageSequence | None]:
    """``source`` without a fixed ``share`` of its training images (at most :data:`HOLDOUT_MAX`), and those images,
    when it has no test split and no labels; else ``source`` unchanged and None."""
    n = len(source.train)
    count = min(HOLDOUT_MAX, round(share * n))
    if source.test is not None or source.num_classes > 0 or count < 2 or n - count < 2:
        return source, None
    chosen = subset_indices(_targets(source.train), count, seed=HOLDOUT_SEED)
    kept = sorted(set(range(n)) - set(chosen))
    return dataclasses.replace(source, train=take_subset(source.train, kept)), take_subset(source.train, chosen)


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Per-channel statistics for ``channels`` channels: as given when they match, else their mean for each channel
    (RGB weights on grey images: timm sums the first layer's kernels over the colours)."""
    if len(values) == channels:
        return tuple(values)
    return (sum(values) / len(values),) * channels


def datasets_from(
    settings: DataSettings,
    name: str | None = None,
    foreign: bool = False,
    subset: bool = True,
    needs: InputNeeds = InputNeeds(),
) -> DataSplits:
    """The splits the ``data`` settings describe.

    Args:
        settings: the data section.
        name: another dataset than ``settings.name`` (e.g. for transfer).
        foreign: the dataset is not the one the settings were chosen for: its own augmentation, image size and
            pipeline are used.
        subset: take the training subset of ``data.subset`` (the evaluation protocols score against the whole
            training split).
        needs: what the encoder asks of its inputs.
    """
    return build_datasets(
        name or settings.name,
        settings.root,
        None if foreign else settings.augment,
        None if foreign else settings.image_size,
        "auto" if foreign else settings.pipeline,
        settings.cache_dir,
        settings.subset if subset and not foreign else None,
        settings.strict,
        settings.download,
        None if foreign else small_crops_from(settings),
        needs,
        0.0 if foreign else settings.holdout,
        settings.dicom_window,
        settings.channels,
    )


def small_crops_from(settings: DataSettings) -> SmallCrops | None:
    """The ``data.small_crop*`` settings as a :class:`SmallCrops` (None without small crops; a null side is resolved
    by :func:`build_datasets`)."""
    if not settings.small_crops:
        return None
    scale = settings.small_crop_scale if settings.small_crop_scale is not None else list(SMALL_CROP_SCALE)
    if len(scale) != 2:
        raise DataError(f"data.small_crop_scale must be two numbers [low, high], got {scale}")
    try:
        return SmallCrops(settings.small_crops, settings.small_crop_size, (float(scale[0]), float(scale[1])))
    except ValueError as error:
        raise DataError(f"data.{error}") from None
