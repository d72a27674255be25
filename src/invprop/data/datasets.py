"""Datasets yielding ``(index, image, label)``, registered by name.

``index`` is the image's row in the memory bank; ``label`` is ``-1`` for unlabelled images. The torchvision datasets
are read from ``data.root``; a missing one is fetched by :func:`invprop.data.download.fetch_dataset` when
``data.download`` is true, else a one-line error says where to put its files.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, overload

import numpy as np
import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset

from invprop.data.bands import ARRAY_EXTENSIONS, band_count, band_statistics, folder_reads_bands
from invprop.data.batch_transforms import changes_colour
from invprop.data.dicom import DICOM_EXTENSIONS, FILE_WINDOW, is_dicom, require_pydicom
from invprop.data.download import Fetch, fetch_dataset
from invprop.data.image_sequences import (
    READ_ERRORS,
    ImageFiles,
    ImageSequence,
    TensorImages,
    Unreadable,
    read_error_reason,
)
from invprop.data.transforms import Transform
from invprop.errors import DataError
from invprop.registry import Registry

logger = logging.getLogger(__name__)

#: Held-out fraction and split seed of the digits dataset (a fixed, stratified 75/25 split).
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
#: Digits pixels range over 0..16.
DIGITS_MAX_VALUE = 16.0
#: Seed of the fixed training subset chosen by ``data.subset``.
SUBSET_SEED = 0
#: File suffixes read from image folders.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    *DICOM_EXTENSIONS,
    *ARRAY_EXTENSIONS,
)
#: Label of an unlabelled image.
UNLABELED = -1

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: The augmentation of an image folder of ordinary images, and of a folder of band arrays (no colour change).
DEFAULT_FOLDER_AUGMENT, BAND_FOLDER_AUGMENT = "cifar", "crop_flip"
DIGITS_MEAN, DIGITS_STD = (0.3,), (0.4,)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@dataclass
class Source:
    """Raw splits of a dataset: sequences of ``(image, label)`` with PIL images or (C, H, W) tensors in [0, 1]."""

    train: ImageSequence
    memory: ImageSequence | None
    test: ImageSequence | None
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    small: bool = True


class SubsetSequence:
    """The items ``indices`` of a sequence of ``(image, label)``, keeping ``targets``."""

    def __init__(self, base: ImageSequence, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = list(indices)
        targets = _targets(base)
        self.targets = [targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.base[self.indices[index]]


def _targets(split: ImageSequence) -> list[int]:
    targets = getattr(split, "targets", None)
    return [int(t) for t in targets] if targets is not None else [int(split[i][1]) for i in range(len(split))]


def subset_indices(labels: Sequence[int], count: int, seed: int = SUBSET_SEED) -> list[int]:
    """A fixed subset of ``count`` positions: stratified by label when every image is labelled, sorted."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    if not 1 <= count <= n:
        raise DataError(f"data.subset={count} must be between 1 and the training set size {n}")
    if count == n:
        return list(range(n))
    labelled = min(labels) >= 0 and count >= len(set(labels))
    chosen, _ = train_test_split(
        np.arange(n), train_size=count, stratify=np.asarray(labels) if labelled else None, random_state=seed
    )
    return sorted(int(i) for i in chosen)


def take_subset(split: ImageSequence, indices: Sequence[int]) -> ImageSequence:
    """``split`` restricted to ``indices``, in the cheapest form the tensor cache still understands."""
    if isinstance(split, TensorImages):
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return TensorImages(split.images[index], split.labels[index])
    if isinstance(split, ImageFiles):
        return split.subset(indices)
    return SubsetSequence(split, indices)


def _mix_seed(seed: int, index: int) -> int:
    """A per-image seed from an epoch seed and an image index (64-bit mix, stays below 2**63)."""
    value = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


class IndexedDataset(Dataset):
    """Wraps a sequence of ``(image, label)`` into ``(index, transform(image), label)``.

    An item asked for as ``(seed, index)`` (see :class:`invprop.data.loader.EpochBatchSampler`) is transformed under a
    torch RNG seeded from both, so its augmentation depends on neither the worker that loads it nor what ran before.
    Such a training item whose file cannot be read any more (removed or damaged while the run trains) comes back as
    an :class:`~invprop.data.image_sequences.Unreadable` in place of the image, for the batch to go on without it;
    an item asked for by index alone (evaluation, embedding) raises a one-line :class:`~invprop.errors.DataError`.
    """

    def __init__(self, source: ImageSequence, transform: Transform) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    @overload
    def __getitem__(self, key: int) -> tuple[int, Tensor, int]: ...

    @overload
    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Tensor | Unreadable, int]: ...

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, Tensor | Unreadable, int]:
        if isinstance(key, tuple):
            seed, index = key
            try:
                image, label = self.source[index]
            except READ_ERRORS as err:
                if not isinstance(self.source, ImageFiles):
                    raise
                return index, Unreadable(str(self.source.files[index]), read_error_reason(err)), UNLABELED
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_mix_seed(seed, index))
                return index, self.transform(image), int(label)
        try:
            image, label = self.source[key]
        except READ_ERRORS as err:
            if not isinstance(self.source, ImageFiles):
                raise
            raise DataError(
                f"{self.source.files[key]} could not be read ({read_error_reason(err)}): the folder changed since it "
                "was listed; restore the file, then run again"
            ) from None
        return key, self.transform(image), int(label)

    def augmented(self, seed: int, index: int) -> tuple[Tensor, int]:
        """Image ``index`` transformed under ``seed`` (as a training batch has it) and its label; a
        :class:`~invprop.errors.DataError` naming the file when it cannot be read."""
        _, image, label = self[(seed, index)]
        if isinstance(image, Unreadable):
            raise DataError(f"{image.path} could not be read ({image.reason}); restore it or remove it from the folder")
        return image, label

    @property
    def labels(self) -> Tensor:
        """(N,) int64 labels, ``-1`` where unlabelled."""
        return torch.as_tensor(_targets(self.source), dtype=torch.long)


#: Every built-in dataset: ``(root, download) -> Source``.
DATASETS: Registry[Callable[[Path, bool], Source]] = Registry("dataset")


def _has_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _image_candidates(folder: Path, recursive: bool, unlisted: list[OSError]) -> list[Path]:
    """The entries of ``folder`` (and its subfolders when ``recursive``) named like images that are files or
    symbolic links, sorted. A link is kept whatever its target (missing, a loop, out of reach): reading it fails,
    and the check of unreadable files counts it or refuses it under ``--strict-data`` instead of it vanishing here.
    Folders that cannot be listed are appended to ``unlisted``. Nothing here follows a link to a folder below the
    top, or stats a link's target."""
    found: list[Path] = []
    for top, _, names in os.walk(folder, onerror=unlisted.append):
        found += [Path(top) / name for name in names if _has_image_name(name) and _file_or_link(Path(top) / name)]
        if not recursive:
            break
    return sorted(found)


def _file_or_link(path: Path) -> bool:
    """A regular file, or a link to one or to nothing reachable (a link to a FIFO, socket or device named like an
    image is left out: reading it could block); an entry whose kind cannot be told counts, to be reported as
    unreadable by the readability check."""
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            mode = os.stat(path).st_mode
    except OSError:
        return True
    return stat.S_ISREG(mode)


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def scan_image_folder(root: Path, window: str = FILE_WINDOW) -> ImageFiles:
    """Images of ``root``: labelled by subfolder (ImageFolder layout) or, if ``root`` holds images directly and no
    class subfolders, unlabelled (label ``-1``); DICOM files among them are windowed by ``window``."""
    if root.exists() and not root.is_dir():
        raise DataError(f"image folder {root} is a file, not a folder: give the folder that holds the images")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    unlisted: list[OSError] = []
    try:
        subfolders = sorted(d for d in root.iterdir() if _is_folder(d))
    except OSError as err:
        raise DataError(f"image folder {root} cannot be listed ({err.strerror or err})") from None
    files: list[Path] = []
    labels: list[int] = []
    classes: list[str] = []
    for folder in subfolders:
        found = _image_candidates(folder, recursive=True, unlisted=unlisted)
        if found:
            files += found
            labels += [len(classes)] * len(found)
            classes.append(folder.name)
    if not classes:
        files = _image_candidates(root, recursive=False, unlisted=unlisted)
        labels = [UNLABELED] * len(files)
    if unlisted:
        logger.warning("%d folder(s) under %s cannot be listed and were left out, e.g. %s (%s)", len(unlisted), root,
                       unlisted[0].filename, unlisted[0].strerror or unlisted[0])  # fmt: skip
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...) found under {root}")
    if any(is_dicom(path) for path in files):
        require_pydicom(root)
    return ImageFiles(files, labels, classes, window, bands=folder_reads_bands(files))


def _band_folder_source(
    train: ImageFiles, test: ImageFiles | None, labelled: bool, image_size: int, augment: str | None, small: bool
) -> Source:
    """A folder of band arrays: its band count and per-band normalisation measured on its images; a colour-free
    augmentation (``crop_flip`` unless another colour-free preset is asked for)."""
    channels = band_count(train.files)
    if test is not None and band_count(test.files) != channels:
        raise DataError(f"the training images have {channels} band(s) and the test images "
                        f"{band_count(test.files)}; give both the same bands")  # fmt: skip
    if augment is not None and changes_colour(augment):
        raise DataError(f"data.augment={augment} changes colours, which {channels}-band images do not have; use a "
                        f"colour-free preset such as {BAND_FOLDER_AUGMENT} (the default for band arrays)")  # fmt: skip
    mean, std = band_statistics(train.files, image_size)
    return Source(
        train=train,
        memory=train if labelled else None,
        test=test if labelled else None,
        num_classes=len(train.classes) if labelled else 0,
        in_channels=channels,
        image_size=image_size,
        mean=mean,
        std=std,
        augment=augment or BAND_FOLDER_AUGMENT,
        small=small,
    )


def image_folder_source(
    root: Path, image_size: int = 32, augment: str | None = None, small: bool = False, window: str = FILE_WINDOW
) -> Source:
    """A user's folder: ``root/train`` and ``root/test`` if present, else ``root`` itself (no held-out split); DICOM
    files are windowed by ``window`` (``data.dicom_window``)."""
    train_dir = root / "train" if (root / "train").is_dir() else root
    train = scan_image_folder(train_dir, window)
    test = scan_image_folder(root / "test", window) if (root / "test").is_dir() and train_dir != root else None
    labelled = bool(train.classes) and test is not None and test.classes == train.classes
    if train.classes and test is not None and test.classes != train.classes:
        raise DataError(f"class folders of {root / 'train'} and {root / 'test'} differ; make them the same")
    if test is not None and test.bands != train.bands:
        raise DataError(f"{root / 'train'} and {root / 'test'} hold different kinds of image (arrays of bands in one, "
                        "ordinary images in the other); make them the same")  # fmt: skip
    if train.bands:
        return _band_folder_source(train, test, labelled, image_size, augment, small)
    augment = augment or DEFAULT_FOLDER_AUGMENT
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if augment == "imagenet" else (CIFAR_MEAN, CIFAR_STD)
    return Source(
        train=train,
        memory=train if labelled else None,
        test=test if labelled else None,
        num_classes=len(train.classes) if labelled else 0,
        in_channels=3,
        image_size=image_size,
        mean=mean,
        std=std,
        augment=augment,
        small=small,
    )


@DATASETS.register("digits")
def digits_source(root: Path, download: bool = False) -> Source:
    """scikit-learn's bundled 1,797 8x8 digits, fixed stratified 75/25 train/test split (no file needed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / DIGITS_MAX_VALUE
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=bunch.target, random_state=DIGITS_SPLIT_SEED
    )
    train = TensorImages(images[train_idx], labels[train_idx])
    test = TensorImages(images[test_idx], labels[test_idx])
    return Source(train, train, test, 10, 1, 8, DIGITS_MEAN, DIGITS_STD, "digits")


def _torchvision(
    root: Path, download: bool, spec: Fetch, build: Callable[[], tuple[Any, Any, Any]]
) -> tuple[Any, Any, Any]:
    """The splits ``build`` reads from ``root``; when they are not there, fetched first (``download``) or a one-line
    error saying where to put them."""
    try:
        return build()
    except (RuntimeError, FileNotFoundError, OSError) as err:
        if not download:
            raise DataError(
                f"{spec.label} not found under {root}: {spec.by_hand}, or set data.download=true to fetch it ({err})"
            ) from None
    fetch_dataset(spec, root)
    return build()


def _fetch(
    label: str, folder: str, entries: tuple[str, ...], dataset: Any, splits: Sequence[dict[str, Any]], by_hand: str
) -> Fetch:
    """A :class:`Fetch` through torchvision's ``dataset`` class, one download per keyword arguments in ``splits``."""

    def download(where: Path) -> None:
        for kwargs in splits:
            dataset(str(where), download=True, **kwargs)

    return Fetch(label, folder, entries, download, by_hand)


@DATASETS.register("cifar10")
def cifar10_source(root: Path, download: bool = False) -> Source:
    """CIFAR-10: an ImageFolder copy ``root/cifar10/train/<class>/`` if there, else torchvision's
    ``cifar-10-batches-py/`` under root (fetched with ``download``)."""
    folder = root / "cifar10"
    if (folder / "train").is_dir():
        return image_folder_source(folder, 32, "cifar", small=True)
    ds = torchvision.datasets.CIFAR10
    spec = _fetch(
        "CIFAR-10",
        "",
        ("cifar-10-batches-py",),
        ds,
        ({"train": True},),
        f"put cifar-10-batches-py/ (the python version) or an ImageFolder copy cifar10/train/<class>/ under {root}",
    )
    train, _, test = _torchvision(
        root, download, spec, lambda: (ds(str(root), train=True), None, ds(str(root), train=False))
    )
    return Source(train, train, test, 10, 3, 32, CIFAR_MEAN, CIFAR_STD, "cifar")


@DATASETS.register("cifar100")
def cifar100_source(root: Path, download: bool = False) -> Source:
    ds = torchvision.datasets.CIFAR100
    spec = _fetch("CIFAR-100", "", ("cifar-100-python",), ds, ({"train": True},), f"put cifar-100-python/ under {root}")
    train, _, test = _torchvision(
        root, download, spec, lambda: (ds(str(root), train=True), None, ds(str(root), train=False))
    )
    return Source(train, train, test, 100, 3, 32, CIFAR_MEAN, CIFAR_STD, "cifar")


@DATASETS.register("svhn")
def svhn_source(root: Path, download: bool = False) -> Source:
    ds = torchvision.datasets.SVHN
    where = root / "svhn"
    spec = _fetch(
        "SVHN",
        "svhn",
        ("train_32x32.mat", "test_32x32.mat"),
        ds,
        ({"split": "train"}, {"split": "test"}),
        f"put train_32x32.mat and test_32x32.mat under {where}",
    )
    train, _, test = _torchvision(
        root, download, spec, lambda: (ds(str(where), split="train"), None, ds(str(where), split="test"))
    )
    train.targets, test.targets = train.labels.tolist(), test.labels.tolist()
    return Source(train, train, test, 10, 3, 32, CIFAR_MEAN, CIFAR_STD, "cifar")


@DATASETS.register("stl10")
def stl10_source(root: Path, download: bool = False) -> Source:
    """STL-10: trains on train+unlabeled (105k), monitors kNN with the labelled train split."""
    ds = torchvision.datasets.STL10
    spec = _fetch("STL-10", "", ("stl10_binary",), ds, ({"split": "train"},), f"put stl10_binary/ under {root}")
    train, memory, test = _torchvision(
        root,
        download,
        spec,
        lambda: (ds(str(root), split="train+unlabeled"), ds(str(root), split="train"), ds(str(root), split="test")),
    )
    for split in (train, memory, test):
        split.targets = [int(t) if t >= 0 else UNLABELED for t in split.labels]
    return Source(train, memory, test, 10, 3, 96, IMAGENET_MEAN, IMAGENET_STD, "imagenet")


class _GrayToTensor:
    """MNIST's PIL images -> (1, H, W) tensors in [0, 1], so the digits augmentation applies."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.targets = [int(t) for t in base.targets]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.base[index]
        return torchvision.transforms.functional.to_tensor(image), int(label)


@DATASETS.register("mnist")
def mnist_source(root: Path, download: bool = False) -> Source:
    ds = torchvision.datasets.MNIST
    spec = _fetch(
        "MNIST",
        "",
        ("MNIST",),
        ds,
        ({"train": True}, {"train": False}),
        f"put MNIST/raw/ (the four idx files) under {root}",
    )
    train, _, test = _torchvision(
        root, download, spec, lambda: (ds(str(root), train=True), None, ds(str(root), train=False))
    )
    train, test = _GrayToTensor(train), _GrayToTensor(test)
    return Source(train, train, test, 10, 1, 28, MNIST_MEAN, MNIST_STD, "digits")


IMAGEFOLDER_PREFIX = "imagefolder:"


def image_folder_path(name: str) -> Path:
    """The folder of ``imagefolder:PATH`` (``~`` expanded); a one-line error when PATH is empty (which would
    otherwise be the working folder)."""
    given = name[len(IMAGEFOLDER_PREFIX) :]
    if not given.strip():
        raise DataError("imagefolder: names no folder; give it as --dataset imagefolder:PATH")
    return Path(given).expanduser()


def dataset_names() -> list[str]:
    return DATASETS.names() + [IMAGEFOLDER_PREFIX + "PATH"]


def load_source(
    name: str,
    root: str | os.PathLike[str],
    image_size: int | None = None,
    augment: str | None = None,
    download: bool = False,
    window: str = FILE_WINDOW,
) -> Source:
    """The raw splits of dataset ``name`` (a registered name or ``imagefolder:PATH``); ``download`` fetches a missing
    built-in dataset into ``root`` (:mod:`invprop.data.download`); ``window``: how an image folder's DICOM files are
    windowed."""
    if name.startswith(IMAGEFOLDER_PREFIX):
        return image_folder_source(image_folder_path(name), image_size or 32, augment, window=window)
    return DATASETS.get(name)(Path(root).expanduser(), download)
