"""Sequences of ``(image, label)``: image files, in-memory tensors, and the decode-once tensor cache.

:class:`TensorImages` holds every image of a split as one (N, C, H, W) uint8 tensor (float for data that is not
8-bit, e.g. scikit-learn's digits); :class:`ImageFiles` reads image files one by one. Turning a folder into tensor
images once, and keeping the result, is :mod:`invprop.data.decode_cache`'s.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from invprop.data.bands import load_bands
from invprop.data.dicom import FILE_WINDOW, dicom_pixels, is_dicom
from invprop.errors import first_line
from invprop.machine import available_cores

logger = logging.getLogger(__name__)
R = TypeVar("R")


class ImageSequence(Protocol):
    """What every split is: indexable ``(image, label)`` pairs (PIL images or tensors), ``label`` -1 if unknown."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, int]: ...


#: Folders of at least this many files are read by several processes (fewer: one process, no start-up cost).
PARALLEL_READ_MIN_FILES = 4096
#: Files per task of a reading process.
READ_CHUNK_FILES = 1024
#: Most reading processes started.
MAX_READ_WORKERS = 16

#: Full scale of 8-bit images.
UINT8_MAX = 255.0


#: PIL modes holding more than 8 bits per pixel, with their full-scale value (scaled down to 8 bits on load).
WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def load_rgb(path: Path, side: int | None = None, window: str = FILE_WINDOW) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image, upright, optionally at a working size.

    The EXIF orientation is applied (a phone's portrait photo stands up). Grayscale (L, LA), palette, RGBA (alpha
    dropped), CMYK and 1-bit files are converted; 16-bit and 32-bit grayscale are scaled to 8 bits instead of being
    clipped. With ``side``, the image is resized so that its shorter side is ``side`` and centre-cropped to a square
    (a JPEG is decoded at the smallest DCT scale still at least that large, which makes large photos cheap).
    A DICOM file (``.dcm``) is read with pydicom and windowed to 8 bits by ``window`` (:mod:`invprop.data.dicom`).
    Raises ``OSError``/``ValueError`` for unreadable, truncated or non-image files.
    """
    if is_dicom(path):
        rgb = Image.fromarray(dicom_pixels(path, window)).convert("RGB")
        return rgb if side is None else square(rgb, side)
    with Image.open(path) as img:
        if side is not None and img.format == "JPEG":
            img.draft("RGB", (side, side))
        img.load()
        upright = ImageOps.exif_transpose(img)
        if upright.mode in WIDE_MODES:
            array = np.asarray(upright, dtype=np.float64) / WIDE_MODES[upright.mode] * UINT8_MAX
            rgb = Image.fromarray(np.clip(np.round(array), 0, UINT8_MAX).astype(np.uint8), mode="L").convert("RGB")
        else:
            rgb = upright.convert("RGB")
    return rgb if side is None else square(rgb, side)


def square(image: Image.Image, side: int) -> Image.Image:
    """``image`` resized (bicubic, antialiased) so that its shorter side is ``side``, then centre-cropped to
    ``side`` x ``side``."""
    width, height = image.size
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return image.crop((left, top, left + side, top + side))


class ImageFiles:
    """A sequence of ``(RGB PIL image, label)`` read from a list of files (see :func:`load_rgb`)."""

    def __init__(
        self, files: list[Path], labels: list[int], classes: list[str], window: str = FILE_WINDOW, bands: bool = False
    ) -> None:
        self.files = files
        self.targets = labels
        self.classes = classes
        #: How DICOM files among them are windowed (``data.dicom_window``).
        self.window = window
        #: Read as arrays of bands (:mod:`invprop.data.bands`): items are (C, H, W) float tensors, not PIL images.
        self.bands = bands

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image | Tensor, int]:
        if self.bands:
            return to_float(torch.from_numpy(load_bands(self.files[index])).permute(2, 0, 1)), self.targets[index]
        return load_rgb(self.files[index], window=self.window), self.targets[index]

    def subset(self, indices: Sequence[int]) -> ImageFiles:
        """The files at ``indices``, in that order, read the same way."""
        return ImageFiles([self.files[i] for i in indices], [self.targets[i] for i in indices], self.classes,
                          self.window, self.bands)  # fmt: skip


#: What decoding an unreadable, truncated, vanished or non-image file raises (:func:`load_rgb`).
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Unreadable:
    """Stands in a training batch for an image file that could not be read when the batch was loaded (removed,
    truncated or replaced while the run trained): the batch goes on without it."""

    path: str
    reason: str


def read_error_reason(err: BaseException) -> str:
    """A short reason for a failed read: the OS's words (``No such file or directory``) or the decoder's."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return first_line(err)


def file_names_digest(source: object) -> str | None:
    """A digest of the files' paths relative to their common folder, in order (None when ``source`` is not
    :class:`ImageFiles`): the same folder moved elsewhere keeps it; a file renamed, added or removed changes it."""
    if not isinstance(source, ImageFiles) or not source.files:
        return None
    root = os.path.commonpath([os.fspath(path) for path in source.files])
    digest = hashlib.sha256()
    for path in source.files:
        digest.update(os.fsencode(os.path.relpath(path, root)) + b"\n")
    return digest.hexdigest()[:24]


def decode_file(path: Path, side: int | None = None, window: str = FILE_WINDOW, bands: bool = False) -> np.ndarray:
    """``path`` as an (H, W, C) uint8 array: its bands (``bands``) or its RGB image (:func:`load_rgb`)."""
    return load_bands(path, side) if bands else np.array(load_rgb(path, side, window))


def _readable(path: Path, window: str = FILE_WINDOW, bands: bool = False) -> bool:
    try:
        decode_file(path, None, window, bands)
    except READ_ERRORS:
        return False
    return True


def readable_chunk(paths: list[Path], window: str = FILE_WINDOW, bands: bool = False) -> list[bool]:
    return [_readable(path, window, bands) for path in paths]


def decode_chunk(
    paths: list[Path], side: int | None = None, window: str = FILE_WINDOW, bands: bool = False
) -> list[np.ndarray]:
    return [decode_file(path, side, window, bands) for path in paths]


def read_workers(count: int) -> int:
    """Processes that read ``count`` files: one below :data:`PARALLEL_READ_MIN_FILES`, else one per available core
    (at most :data:`MAX_READ_WORKERS`)."""
    if count < PARALLEL_READ_MIN_FILES:
        return 1
    return max(1, min(available_cores(), MAX_READ_WORKERS))


def map_file_chunks(fn: Callable[[list[Path]], list[R]], paths: list[Path], workers: int) -> list[R]:
    """``fn`` over chunks of ``paths``, concatenated in order; chunks go to ``workers`` processes when it is above
    one.

    The processes are forked where the platform allows it, as DataLoader workers are: they only read files (never
    CUDA), and unlike spawned ones they do not re-run the caller's main script, which may lack a ``__main__`` guard.
    """
    chunks = [paths[i : i + READ_CHUNK_FILES] for i in range(0, len(paths), READ_CHUNK_FILES)]
    if workers <= 1 or len(chunks) <= 1:
        return [item for chunk in chunks for item in fn(chunk)]
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
        return [item for part in pool.map(fn, chunks) for item in part]


class TensorImages:
    """A sequence of ``(float image in [0, 1], label)`` over one (N, C, H, W) tensor, uint8 or float.

    Args:
        images: (N, C, H, W) uint8 (0..255) or float (0..1).
        labels: (N,) int64, ``-1`` where unlabelled.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.targets = self.labels.tolist()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return to_float(self.images[index]), self.targets[index]

    def to(self, device: torch.device | str) -> "TensorImages":
        return TensorImages(self.images.to(device), self.labels.to(device))


def to_float(images: Tensor) -> Tensor:
    """uint8 (0..255) or float (0..1) images -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(UINT8_MAX)
    return images.float()
