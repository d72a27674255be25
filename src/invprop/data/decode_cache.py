"""A folder is decoded once: :func:`to_tensor_images` turns any supported split into one :class:`TensorImages`, and
folders of image files are decoded at the working size into a cache that later runs read instead.

The cache file of a list of files is named by a key of the files' paths (as bytes: any file name), sizes,
modification times and labels, the working side and the format; inside, the payload repeats the key, the count
and the side, with a SHA-256 of the image bytes. A cache that fails any check -- another structure, another key,
count or side, a changed byte -- is ignored with one warning and the folder is decoded again. The readability
check of a folder (which files are broken) is cached the same way, its indices checked against the folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torchvision
from torch import Tensor

from invprop.data.dicom import is_dicom
from invprop.data.image_sequences import (
    ImageFiles,
    ImageSequence,
    TensorImages,
    decode_chunk,
    map_file_chunks,
    read_workers,
    readable_chunk,
)
from invprop.errors import DataError
from invprop.files import write_atomically, write_text_atomically

logger = logging.getLogger(__name__)

#: Version of the on-disk cache format (part of the cache key).
CACHE_FORMAT = 2
#: Errors of a cache file that is not one.
_UNREADABLE = (OSError, RuntimeError, EOFError, ValueError, TypeError, pickle.UnpicklingError)


def cache_key(files: ImageFiles, side: int | None = None) -> str:
    """A key of ``files``' paths (bytes, so any file name), sizes, modification times and labels, and ``side``."""
    window = f"|window={files.window}" if any(is_dicom(path) for path in files.files) else ""
    window += "|bands" if files.bands else ""
    digest = hashlib.sha256(f"invprop-images-v{CACHE_FORMAT}|side={side}{window}\n".encode())
    for path, label in zip(files.files, files.targets):
        try:
            stat, where = path.stat(), path.resolve()
        except (OSError, RuntimeError):  # a link that leads nowhere (missing, a loop, out of reach): keyed as a link
            stat, where = os.lstat(path), path.absolute()
        digest.update(os.fsencode(where) + f"|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
    return digest.hexdigest()[:24]


def checksum(images: Tensor) -> str:
    """SHA-256 of a tensor's bytes."""
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def _decode_files(files: ImageFiles, side: int | None = None, workers: int | None = None) -> Tensor:
    """Every file as one (N, C, H, W) uint8 tensor, at ``side`` x ``side`` when given (``workers`` processes; default
    :func:`~invprop.data.image_sequences.read_workers`)."""
    decode = functools.partial(decode_chunk, side=side, window=files.window, bands=files.bands)
    arrays = map_file_chunks(decode, files.files, read_workers(len(files)) if workers is None else workers)
    first = arrays[0].shape
    images = torch.empty((len(files), first[2], first[0], first[1]), dtype=torch.uint8)
    for i, (path, array) in enumerate(zip(files.files, arrays)):
        if array.shape[2:] != first[2:]:
            raise DataError(f"{path} has {array.shape[2]} band(s) but {files.files[0]} has {first[2]}; every image "
                            "of a folder must have the same bands")  # fmt: skip
        if array.shape != first:
            raise DataError(
                f"{path} is {array.shape[1]}x{array.shape[0]} but {files.files[0]} is {first[1]}x{first[0]}; "
                "the tensor pipeline needs images of one size -- resize them or use --set data.pipeline=per_image"
            )
        images[i] = torch.from_numpy(array).permute(2, 0, 1)
    return images


def _verified(payload: Any, key: str, count: int, side: int | None) -> Tensor | None:
    """The images of a cache payload when it is the cache of ``key`` (count, side and checksum agree), else None."""
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("key") != key:
        return None
    images = payload.get("images")
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 or len(images) != count:
        return None
    if side is not None and tuple(images.shape[2:]) != (side, side):
        return None
    return images if payload.get("sha256") == checksum(images) else None


def cached_image_files(files: ImageFiles, cache_dir: Path | None, side: int | None = None) -> TensorImages:
    """Decode a list of image files into uint8 tensors once (at ``side`` x ``side`` when given, whatever each file's
    size); later calls read the verified cache (with ``cache_dir``)."""
    labels = torch.tensor(files.targets, dtype=torch.long)
    key = cache_key(files, side)
    path = cache_dir / f"images-{key}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            images = _verified(torch.load(path, map_location="cpu", weights_only=True), key, len(files), side)
        except _UNREADABLE as err:
            logger.warning("ignoring unreadable image cache %s (%s); decoding again", path, err)
        else:
            if images is not None:
                return TensorImages(images, labels)
            logger.warning("ignoring image cache %s: it is not the decoded folder (changed or damaged); decoding "
                           "again", path)  # fmt: skip
    where = "" if side is None else f" at {side}x{side}"
    logger.info("decoding %d images%s into a uint8 tensor cache (once)", len(files), where)
    images = _decode_files(files, side)
    if path is not None:
        payload = {"format": CACHE_FORMAT, "key": key, "sha256": checksum(images), "images": images}
        try:
            write_atomically(path, lambda handle: torch.save(payload, handle))
        except OSError as err:
            logger.warning("could not write the image cache %s (%s); continuing without it", path, err)
    return TensorImages(images, labels)


def _checked_indices(value: Any, count: int) -> list[int] | None:
    """The unreadable files' indices of a check cache, when they are distinct indices of ``count`` files."""
    if not isinstance(value, dict) or not isinstance(value.get("unreadable"), list):
        return None
    bad = value["unreadable"]
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count for i in bad) or len(set(bad)) != len(
        bad
    ):
        return None
    return sorted(bad)


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
    path = cache_dir / f"checked-{cache_key(files)}.json" if cache_dir is not None else None
    bad: list[int] | None = None
    if path is not None and path.is_file():
        try:
            bad = _checked_indices(json.loads(path.read_text()), len(files))
        except (OSError, ValueError):
            bad = None
        if bad is None:
            logger.warning("ignoring the check cache %s: it does not describe this folder; checking again", path)
    if bad is None:
        check = functools.partial(readable_chunk, window=files.window, bands=files.bands)
        readable = map_file_chunks(check, files.files, read_workers(len(files)))
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
    return files.subset(keep), names


def _from_numpy_nhwc(array: Any, labels: Sequence[int]) -> TensorImages:
    images = torch.from_numpy(np.ascontiguousarray(array))
    if images.dim() == 3:
        images = images.unsqueeze(3)
    return TensorImages(images.permute(0, 3, 1, 2).contiguous(), torch.as_tensor(list(labels), dtype=torch.long))


def to_tensor_images(split: ImageSequence, cache_dir: Path | None = None, side: int | None = None) -> TensorImages:
    """Every image of ``split`` in one tensor.

    Supports :class:`TensorImages`, :class:`ImageFiles` (decoded once, at ``side`` x ``side`` when given, and
    cached in ``cache_dir``), torchvision's CIFAR-10/100, SVHN, STL-10 and MNIST datasets (read from their arrays,
    no decoding), and any other sequence whose images are PIL images or tensors of one size (read one by one).
    """
    if isinstance(split, TensorImages):
        return split
    if isinstance(split, ImageFiles):
        return cached_image_files(split, cache_dir, side)
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


__all__ = ["CACHE_FORMAT", "cache_key", "cached_image_files", "check_image_files", "checksum", "to_tensor_images"]
