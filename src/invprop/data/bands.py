"""Images with other than three channels, read as arrays: multispectral TIFF (tifffile, ``pip install
'invprop[multispectral]'``) and NumPy ``.npy`` files.

A folder is read this way when its first image is a ``.npy`` file, or a TIFF that is not an ordinary image: several
pages (one band each) or other than 1, 3 or 4 samples per pixel. Every file of such a folder becomes an (H, W, C) uint8
array: 8-bit bands as they are, other integer bands scaled from their type's full scale (16-bit: 65535 -> 255), float
bands from [0, 1], never clipped at 255 before scaling. A ``.npy`` file holds (H, W) or (H, W, C); a TIFF's sample
axis, wherever tifffile finds it, becomes the last.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from invprop.errors import DataError

ARRAY_EXTENSIONS = (".npy",)
TIFF_EXTENSIONS = (".tif", ".tiff")
#: Full scale of the 8-bit output.
_TOP = 255.0
#: tifffile's names of a sample (band) axis.
_SAMPLE_AXES = "SC"


def _require_tifffile(path: Path) -> None:
    if importlib.util.find_spec("tifffile") is None:
        raise DataError(f"{path} is a multi-band TIFF, which needs tifffile: pip install 'invprop[multispectral]'")


#: The TIFF tags holding the samples per pixel and what the samples beyond the colour ones are.
_SAMPLES_PER_PIXEL, _EXTRA_SAMPLES = 277, 338
#: ExtraSamples values that mean alpha (associated, unassociated): RGBA is an ordinary image, RGB + NIR is not.
_ALPHA = (1, 2)
#: TIFFs of a folder looked at to decide how it is read.
TIFF_SAMPLE = 16


def tiff_kind(path: Path) -> bool | None:
    """True for a TIFF of bands (several pages, or samples other than gray, RGB, RGBA and CMYK), False for an
    ordinary image, None when Pillow cannot read even its header (a damaged file, or a layout Pillow does not
    know: then its bands decide, through tifffile)."""
    try:
        with Image.open(path) as image:
            tags = getattr(image, "tag_v2", {})
            samples = int(tags.get(_SAMPLES_PER_PIXEL, 1))
            extra = tags.get(_EXTRA_SAMPLES, ())
            extra = tuple(extra) if isinstance(extra, (tuple, list)) else (extra,)
            colour = samples in (1, 3) or (samples == 4 and (image.mode == "CMYK" or any(e in _ALPHA for e in extra)))
            return not (getattr(image, "n_frames", 1) == 1 and colour)
    except (OSError, ValueError, SyntaxError):
        return None


def folder_reads_bands(files: list[Path]) -> bool:
    """Whether a folder of ``files`` is read as arrays of bands: every file a ``.npy`` array, or one of up to
    :data:`TIFF_SAMPLE` of its TIFFs a TIFF of bands. A folder mixing ``.npy`` arrays and other images is refused in
    one line (its arrays and images would not share a reader)."""
    arrays = sum(path.suffix.lower() in ARRAY_EXTENSIONS for path in files)
    if arrays:
        if arrays != len(files):
            example = next(path for path in files if path.suffix.lower() in ARRAY_EXTENSIONS)
            raise DataError(f"the folder mixes .npy arrays (e.g. {example}) with other images; keep one kind in it")
        return True
    tiffs = [path for path in files if path.suffix.lower() in TIFF_EXTENSIONS]
    step = max(1, len(tiffs) // TIFF_SAMPLE)
    for path in tiffs[::step][:TIFF_SAMPLE]:
        kind = tiff_kind(path)
        if kind is None and importlib.util.find_spec("tifffile") is not None:
            kind = _tifffile_bands(path)
        if kind:
            _require_tifffile(path)
            return True
    return False


def _tifffile_bands(path: Path) -> bool | None:
    """Whether tifffile reads ``path`` as other than 1, 3 or 4 bands (None when it cannot read it either)."""
    try:
        bands = read_bands(path).shape[2]
    except (OSError, ValueError):
        return None
    return bands not in (1, 3)


def read_bands(path: Path) -> np.ndarray:
    """``path`` as an (H, W, C) array of its own dtype. Raises ``ValueError``/``OSError`` for an unreadable file."""
    suffix = path.suffix.lower()
    if suffix in ARRAY_EXTENSIONS:
        array = np.load(path, allow_pickle=False)
        axes = "YX" if array.ndim == 2 else "YXS"
    elif suffix in TIFF_EXTENSIONS:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tiff:
                series = tiff.series[0]
                array, axes = series.asarray(), series.axes
        except (tifffile.TiffFileError, IndexError, KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"not a TIFF that tifffile can read ({err})") from None
    else:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        axes = "YXS"
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image array must have 2 or 3 axes (height, width, bands); this one has {array.ndim}")
    band_axis = next((i for i, axis in enumerate(axes) if axis in _SAMPLE_AXES), 0 if axes[-1] in "YX" else 2)
    return np.moveaxis(array, band_axis, -1)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Bands of any numeric type -> uint8 by their type's full scale (float: [0, 1]); see the module's note."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(_TOP)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        scaled = (array.astype(np.float64) - min(info.min, 0)) / (info.max - min(info.min, 0)) * _TOP
    elif np.issubdtype(array.dtype, np.floating):
        scaled = array.astype(np.float64) * _TOP
    else:
        raise ValueError(f"image bands of type {array.dtype} cannot be read; save numbers")
    return np.clip(np.round(scaled), 0, _TOP).astype(np.uint8)


def square_bands(array: np.ndarray, side: int) -> np.ndarray:
    """(H, W, C) uint8 -> (side, side, C): the shorter side resized to ``side`` (bilinear, antialiased), then the
    centre cropped -- what :func:`invprop.data.image_sequences.square` does to an RGB image."""
    height, width = array.shape[:2]
    scale = side / min(height, width)
    size = (max(side, round(height * scale)), max(side, round(width * scale)))
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()
    if size != (height, width):
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    image = image[0, :, top : top + side, left : left + side]
    return image.round().clamp(0, _TOP).to(torch.uint8).permute(1, 2, 0).numpy()


def load_bands(path: Path, side: int | None = None) -> np.ndarray:
    """``path`` as (H, W, C) uint8 bands, at ``side`` x ``side`` when given."""
    array = to_uint8(read_bands(path))
    return array if side is None else square_bands(array, side)


#: Most files read to measure a band folder's per-band mean and std.
STATISTICS_FILES = 256


def band_statistics(paths: list[Path], side: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std, in [0, 1] units, of up to :data:`STATISTICS_FILES` of ``paths`` spread evenly over
    them, read at ``side`` (the normalisation of a band folder, measured on its own images). A band that is flat
    everywhere gets std 1."""
    step = max(1, len(paths) // STATISTICS_FILES)
    read = []
    for path in paths[::step][:STATISTICS_FILES]:
        try:
            read.append(load_bands(path, side))
        except (OSError, ValueError):
            continue  # an unreadable file is found, and skipped or named, by the folder check
    if not read:
        raise DataError(f"none of the images sampled from {paths[0].parent} can be read; check the files")
    sample = np.stack(read).astype(np.float64) / _TOP
    mean = sample.mean(axis=(0, 1, 2))
    std = sample.std(axis=(0, 1, 2))
    return tuple(float(m) for m in mean), tuple(float(s) if s > 0 else 1.0 for s in std)


def band_count(paths: list[Path]) -> int:
    """The bands of the first of ``paths`` that can be read (damaged files are left to the folder check)."""
    for path in paths:
        try:
            return int(read_bands(path).shape[2])
        except (OSError, ValueError):
            continue
    raise DataError(f"none of the images of {paths[0].parent} can be read; check the files")
