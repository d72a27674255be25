"""Sequences of ``(image, label)``: image files, in-memory tensors, and the decode-once tensor cache.

:func:`to_tensor_images` turns any supported split into a :class:`TensorImages` holding every image as one
(N, C, H, W) uint8 tensor (float for data that is not 8-bit, e.g. scikit-learn's digits). Folders of image files
are decoded once and the result is kept in a cache folder, keyed by the files' paths, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor

from invprop.errors import DataError
from invprop.files import write_atomically, write_text_atomically
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
#: Version of the on-disk cache format (part of the cache key).
CACHE_FORMAT = 1


#: PIL modes holding more than 8 bits per pixel, with their full-scale value (scaled down to 8 bits on load).
WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def load_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 1-bit files are converted; 16-bit and 32-bit grayscale are
    scaled to 8 bits instead of being clipped. Raises ``OSError``/``ValueError`` for unreadable, truncated or
    non-image files.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode in WIDE_MODES:
            array = np.asarray(img, dtype=np.float64) / WIDE_MODES[img.mode] * UINT8_MAX
            return Image.fromarray(np.clip(np.round(array), 0, UINT8_MAX).astype(np.uint8), mode="L").convert("RGB")
        return img.convert("RGB")


class ImageFiles:
    """A sequence of ``(RGB PIL image, label)`` read from a list of files (see :func:`load_rgb`)."""

    def __init__(self, files: list[Path], labels: list[int], classes: list[str]) -> None:
        self.files = files
        self.targets = labels
        self.classes = classes

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return load_rgb(self.files[index]), self.targets[index]


def _readable(path: Path) -> bool:
    try:
        load_rgb(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    return True


def _readable_chunk(paths: list[Path]) -> list[bool]:
    return [_readable(path) for path in paths]


def _decode_chunk(paths: list[Path]) -> list[np.ndarray]:
    return [np.array(load_rgb(path)) for path in paths]


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


def check_image_files(
    files: ImageFiles, strict: bool = False, cache_dir: Path | None = None
) -> tuple[ImageFiles, list[str]]:
    """Decode every file once; drop (or, with ``strict``, refuse) the unreadable ones.

    Returns the readable files and the paths left out. The result is cached in ``cache_dir`` under a key of the
    files' paths, sizes and modification times, so a folder is checked once.

    Raises:
        DataError: with ``strict``, naming the unreadable files.
    """
    if not files.files:
        return files, []
    path = cache_dir / f"checked-{_cache_key(files)}.json" if cache_dir is not None else None
    bad: list[int] | None = None
    if path is not None and path.is_file():
        try:
            bad = [int(i) for i in json.loads(path.read_text())["unreadable"]]
        except (OSError, ValueError, KeyError, TypeError):
            bad = None
    if bad is None:
        readable = map_file_chunks(_readable_chunk, files.files, read_workers(len(files)))
        bad = [i for i, ok in enumerate(readable) if not ok]
        if path is not None:
            try:
                write_text_atomically(path, json.dumps({"unreadable": bad}))
            except OSError as err:
                logger.warning("could not write the check cache %s (%s)", path, err)
    names = [str(files.files[i]) for i in bad]
    if bad and strict:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise DataError(
            f"{len(names)} unreadable image file(s): {shown} (remove them, or drop --strict-data to skip them)"
        )
    if not bad:
        return files, []
    logger.warning("skipping %d unreadable image file(s), e.g. %s", len(names), names[0])
    unreadable = set(bad)
    keep = [i for i in range(len(files)) if i not in unreadable]
    return ImageFiles([files.files[i] for i in keep], [files.targets[i] for i in keep], files.classes), names


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


def _cache_key(files: ImageFiles) -> str:
    digest = hashlib.sha256(f"invprop-images-v{CACHE_FORMAT}\n".encode())
    for path, label in zip(files.files, files.targets):
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
    return digest.hexdigest()[:24]


def _decode_files(files: ImageFiles, workers: int | None = None) -> Tensor:
    """Every file as one (N, 3, H, W) uint8 tensor (``workers`` processes; default :func:`read_workers`)."""
    arrays = map_file_chunks(_decode_chunk, files.files, read_workers(len(files)) if workers is None else workers)
    first = arrays[0].shape
    images = torch.empty((len(files), first[2], first[0], first[1]), dtype=torch.uint8)
    for i, (path, array) in enumerate(zip(files.files, arrays)):
        if array.shape != first:
            raise DataError(
                f"{path} is {array.shape[1]}x{array.shape[0]} but {files.files[0]} is {first[1]}x{first[0]}; "
                "the tensor pipeline needs images of one size -- resize them or use --set data.pipeline=per_image"
            )
        images[i] = torch.from_numpy(array).permute(2, 0, 1)
    return images


def cached_image_files(files: ImageFiles, cache_dir: Path | None) -> TensorImages:
    """Decode a list of image files into uint8 tensors once; later calls read the cache (if ``cache_dir``)."""
    labels = torch.tensor(files.targets, dtype=torch.long)
    path = cache_dir / f"images-{_cache_key(files)}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload["images"].shape[0] == len(files):
                return TensorImages(payload["images"], labels)
        except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as err:
            logger.warning("ignoring unreadable image cache %s (%s); decoding again", path, err)
    logger.info("decoding %d images into a uint8 tensor cache (once)", len(files))
    images = _decode_files(files)
    if path is not None:
        try:
            write_atomically(path, lambda handle: torch.save({"images": images}, handle))
        except OSError as err:
            logger.warning("could not write the image cache %s (%s); continuing without it", path, err)
    return TensorImages(images, labels)


def _from_numpy_nhwc(array: Any, labels: Sequence[int]) -> TensorImages:
    images = torch.from_numpy(np.ascontiguousarray(array))
    if images.dim() == 3:
        images = images.unsqueeze(3)
    return TensorImages(images.permute(0, 3, 1, 2).contiguous(), torch.as_tensor(list(labels), dtype=torch.long))


def to_tensor_images(split: ImageSequence, cache_dir: Path | None = None) -> TensorImages:
    """Every image of ``split`` in one tensor (see the module docstring).

    Supports :class:`TensorImages`, :class:`ImageFiles`, torchvision's CIFAR-10/100, SVHN, STL-10 and MNIST
    datasets (read from their arrays, no decoding), and any other sequence whose images are PIL images or tensors of
    one size (read one by one).
    """
    if isinstance(split, TensorImages):
        return split
    if isinstance(split, ImageFiles):
        return cached_image_files(split, cache_dir)
    if isinstance(split, torchvision.datasets.CIFAR10):  # includes CIFAR-100
        return _from_numpy_nhwc(split.data, split.targets)
    if isinstance(split, (torchvision.datasets.SVHN, torchvision.datasets.STL10)):
        labels = getattr(split, "targets", split.labels)
        return TensorImages(torch.from_numpy(np.ascontiguousarray(split.data)), torch.as_tensor(list(labels)).long())
    base = getattr(split, "base", None)
    if isinstance(base, torchvision.datasets.MNIST):
        return TensorImages(
            base.data.unsqueeze(1).contiguous(), torch.as_tensor(list(getattr(split, "targets"))).long()
        )
    images, labels = [], []
    for image, label in (split[i] for i in range(len(split))):
        tensor = image if isinstance(image, Tensor) else torchvision.transforms.functional.pil_to_tensor(image)
        images.append(tensor)
        labels.append(int(label))
    if len({tuple(t.shape) for t in images}) > 1:
        raise DataError("the tensor pipeline needs images of one size; use --set data.pipeline=per_image")
    return TensorImages(torch.stack(images), torch.tensor(labels, dtype=torch.long))
