"""Defaults fitted to a user's image folder and to the machine: the settings a folder gets that the user did not set.

A rule, not a table of names: the image side follows the folder's images (the median shorter side of a sample,
never enlarged, capped by what the device trains at CIFAR-like speed); the backbone and augmentation follow the
side and the device; the batch follows the device; the DataLoader workers follow the pipeline and the cores. The
epochs are not fitted here: they come from a time budget (``invprop compare --budget``; without one, a folder gets
:data:`FOLDER_BUDGET_SECONDS` of training in all), planned by a timed probe on this machine.
"""

from __future__ import annotations

import importlib.util
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from invprop.data.bands import ARRAY_EXTENSIONS, TIFF_EXTENSIONS, band_count, folder_reads_bands, read_bands
from invprop.data.datasets import BAND_FOLDER_AUGMENT, IMAGE_EXTENSIONS, IMAGEFOLDER_PREFIX, image_folder_path
from invprop.data.dicom import is_dicom
from invprop.data.splits import fits_in_memory
from invprop.machine import available_cores

#: Image sides a folder may be decoded at (a folder never gets a side larger than its images').
SIDES = (16, 24, 32, 48, 64, 96, 128, 160, 192, 224)
#: The largest side on a CPU with at most :data:`SMALL_CPU_CORES` cores (CIFAR's, the speed a CPU trains at), and
#: with more.
SMALL_CPU_SIDE, CPU_SIDE = 32, 64
SMALL_CPU_CORES = 4
#: The largest side on a GPU (ImageNet's).
GPU_SIDE = 224
#: Up to this side the CIFAR stem and augmentation fit; above it, ImageNet's.
CIFAR_LIKE_SIDE = 64
#: Batches: the CPU setting's and a GPU's.
CPU_BATCH, GPU_BATCH = 128, 256
#: Most DataLoader workers of the per-image pipeline.
MAX_WORKERS = 8
#: Files whose sizes are read (headers only) to fit the side.
SIZE_SAMPLE = 256
#: Time a folder gets without --epochs or --budget: about an hour for `compare`'s default methods (split between
#: them), an hour for `train`.
FOLDER_BUDGET_SECONDS = 3600.0
#: The share of a compare's hour that training gets; the rest is for what a method does besides its epochs (the
#: timed probe, the decode, the monitor, the label-free scores).
FOLDER_TRAINING_SHARE = 0.8


@dataclass(frozen=True)
class FolderFacts:
    """What the rule reads from a folder.

    Attributes:
        images: image files (by extension; unreadable ones are found later).
        shorter_side: the median shorter side of the sampled images, in pixels.
        sampled: how many files were opened for it.
        bands: the folder holds band arrays (multispectral TIFF, ``.npy``; :mod:`invprop.data.bands`).
        channels: the channels of its images (3 unless it holds band arrays).
    """

    images: int
    shorter_side: int
    sampled: int
    bands: bool = False
    channels: int = 3


@dataclass(frozen=True)
class MachineFacts:
    """What the rule reads from the machine: a CUDA device, and the cores."""

    cuda: bool
    cores: int

    @staticmethod
    def here(device: str = "auto") -> "MachineFacts":
        """This machine, as the run's ``device`` setting will use it."""
        return MachineFacts(torch.cuda.is_available() and not device.startswith("cpu"), available_cores())

    def describe(self) -> str:
        return f"a CUDA GPU and {self.cores} CPU cores" if self.cuda else f"a CPU of {self.cores} cores, no GPU"


@dataclass(frozen=True)
class Choice:
    """One fitted setting: its dotted key, value, and why."""

    key: str
    value: Any
    reason: str


def _image_files(folder: Path) -> list[Path]:
    root = folder / "train" if (folder / "train").is_dir() else folder
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def folder_facts(folder: Path) -> FolderFacts:
    """The image count of ``folder`` (its ``train/`` when it has one) and the median shorter side of up to
    :data:`SIZE_SAMPLE` of its files, spread over the sorted list (headers only: nothing is decoded)."""
    files = _image_files(folder)
    step = max(1, len(files) // SIZE_SAMPLE)
    sides = []
    for path in files[::step][:SIZE_SAMPLE]:
        try:
            sides.append(_shorter_side(path))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # an unreadable file is found and counted by the folder check
    bands = bool(files) and folder_reads_bands(files)
    channels = band_count(files) if bands else 3
    return FolderFacts(len(files), int(statistics.median(sides)) if sides else SIDES[0], len(sides), bands, channels)


def _shorter_side(path: Path) -> int:
    """The shorter side of an image file, from its header: a ``.npy`` array's shape, a DICOM file's Rows and Columns,
    a TIFF that Pillow does not know through tifffile."""
    suffix = path.suffix.lower()
    if suffix in ARRAY_EXTENSIONS:
        return int(min(np.load(path, mmap_mode="r", allow_pickle=False).shape[:2]))
    if is_dicom(path):
        import pydicom

        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            return int(min(header.Rows, header.Columns))
        except (pydicom.errors.InvalidDicomError, AttributeError) as err:
            raise ValueError(f"not a DICOM image ({err})") from None
    try:
        with Image.open(path) as image:
            return min(image.size)
    except (OSError, ValueError, SyntaxError):
        if suffix not in TIFF_EXTENSIONS or importlib.util.find_spec("tifffile") is None:
            raise
        return int(min(read_bands(path).shape[:2]))


def fitted_choices(folder: FolderFacts, machine: MachineFacts) -> list[Choice]:
    """The settings the rule picks for ``folder`` on ``machine``, each with its reason."""
    cap = GPU_SIDE if machine.cuda else SMALL_CPU_SIDE if machine.cores <= SMALL_CPU_CORES else CPU_SIDE
    fitting = [s for s in SIDES if s <= min(folder.shorter_side, cap)]
    side = fitting[-1] if fitting else SIDES[0]
    why_side = (
        f"the images' median shorter side is {folder.shorter_side} px"
        + (f"; {cap} px is the largest side this machine trains at CIFAR-like speed" if folder.shorter_side > cap else "")
    )  # fmt: skip
    small = side <= CIFAR_LIKE_SIDE
    if machine.cuda:
        backbone = "resnet18_cifar" if small else "resnet18"
        why_backbone = "ResNet-18 with the CIFAR stem for small images" if small else "ResNet-18 for large images"
    else:
        backbone = "small_convnet"
        why_backbone = "a ResNet-18 is a GPU network; the small conv net trains at CIFAR-like speed on a CPU"
    tensors = fits_in_memory(folder.images, side, folder.channels)
    workers = 0 if tensors else max(0, min(machine.cores - 1, MAX_WORKERS))
    return [
        Choice("data.image_size", side, why_side),
        Choice("data.augment", BAND_FOLDER_AUGMENT, "crops and flips, no colour change: the images are band arrays")
        if folder.bands
        else Choice("data.augment", "cifar" if small else "imagenet",
                    f"the {'CIFAR' if small else 'ImageNet'} crops and colour for {side}-px images"),
        Choice("model.backbone", backbone, why_backbone),
        Choice("optim.batch_size", GPU_BATCH if machine.cuda else CPU_BATCH,
               "a GPU's batch" if machine.cuda else "the CPU setting's batch"),
        Choice("data.num_workers", workers,
               "the images are decoded once into memory (tensor pipeline)" if tensors
               else f"per-image loading on {machine.cores} cores"),
    ]  # fmt: skip


def as_values(choices: list[Choice]) -> dict[str, Any]:
    """The choices as nested settings."""
    values: dict[str, Any] = {}
    for choice in choices:
        section, key = choice.key.split(".")
        values.setdefault(section, {})[key] = choice.value
    return values


def describe(folder: Path, facts: FolderFacts, machine: MachineFacts, choices: list[Choice]) -> str:
    """The lines that announce the choice, once."""
    lines = [f"fitted to {folder} ({facts.images} images, median shorter side {facts.shorter_side} px) and this "
             f"machine ({machine.describe()}); --set any of them to change it:"]  # fmt: skip
    lines += [f"  {c.key}={c.value}  ({c.reason})" for c in choices]
    return "\n".join(lines)


__all__ = [
    "Choice",
    "FOLDER_BUDGET_SECONDS",
    "FOLDER_TRAINING_SHARE",
    "FolderFacts",
    "MachineFacts",
    "SIDES",
    "as_values",
    "describe",
    "fitted_choices",
    "fitted_for",
    "folder_facts",
]


def _user_set(user: Mapping[str, Any], key: str) -> bool:
    section, name = key.split(".")
    values = user.get(section)
    return isinstance(values, Mapping) and name in values


def fitted_for(dataset: str, user: Mapping[str, Any], device: str = "auto") -> tuple[dict[str, Any], str | None]:
    """The fitted settings of ``dataset`` when it is an image folder, without the keys ``user`` (the settings file
    and overrides) sets, and the lines announcing them; ``({}, None)`` for any other dataset."""
    if not dataset.startswith(IMAGEFOLDER_PREFIX):
        return {}, None
    folder = image_folder_path(dataset)
    if not folder.is_dir():
        return {}, None  # the data layer says what is wrong with it
    facts, machine = folder_facts(folder), MachineFacts.here(device)
    choices = [c for c in fitted_choices(facts, machine) if not _user_set(user, c.key)]
    return as_values(choices), describe(folder, facts, machine, choices) if choices else None
