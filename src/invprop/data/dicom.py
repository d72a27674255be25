"""DICOM files in an image folder (medical scans), read with pydicom (``pip install 'invprop[dicom]'``) and windowed
to 8 bits (``data.dicom_window``).

A grayscale scan's stored values are first turned into the modality's units (``RescaleSlope`` and
``RescaleIntercept``: Hounsfield units for CT), then mapped through a window: values at or below ``center - width /
2`` become 0, at or above ``center + width / 2`` become 255, linearly in between (DICOM PS3.3 C.11.2.1.3.2,
LINEAR_EXACT; the older LINEAR form's ``center - 0.5`` and ``width - 1`` are not used). MONOCHROME1 (white is low) is inverted. A colour (RGB) file is read as it is; a multi-frame file
gives its first frame.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from invprop.errors import ConfigError, DataError, first_line

DICOM_EXTENSIONS = (".dcm", ".dicom")
#: ``data.dicom_window``: the file's own WindowCenter/WindowWidth (its full range when it has none).
FILE_WINDOW = "file"
#: ``data.dicom_window``: each image's own minimum to maximum.
FULL_RANGE = "full"
#: Full scale of the 8-bit output.
_TOP = 255.0


def is_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS


def require_pydicom(where: Path) -> None:
    """A one-line error naming the extra when ``where`` holds DICOM files and pydicom is not installed."""
    if importlib.util.find_spec("pydicom") is None:
        raise DataError(f"{where} holds DICOM files, which need pydicom: pip install 'invprop[dicom]'")


def parse_window(text: str) -> str | tuple[float, float]:
    """``file``, ``full`` or ``CENTER,WIDTH`` (e.g. ``40,400``, CT soft tissue) -> the window; a one-line error
    otherwise."""
    if text in (FILE_WINDOW, FULL_RANGE):
        return text
    parts = text.split(",")
    try:
        center, width = (float(part) for part in parts)
    except ValueError:
        center, width = 0.0, -1.0
    if len(parts) != 2 or not width > 0:
        raise ConfigError(f"data.dicom_window must be {FILE_WINDOW}, {FULL_RANGE} or CENTER,WIDTH with a positive "
                          f"width (e.g. 40,400 for CT soft tissue); got {text!r}")  # fmt: skip
    return center, width


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """(H, W) modality values -> uint8 through the linear window (``center``, ``width``)."""
    low = center - width / 2.0
    scaled = (values.astype(np.float64) - low) / width * _TOP
    return np.clip(np.round(scaled), 0, _TOP).astype(np.uint8)


def _first(value: object) -> float:
    """A DICOM attribute that may hold several values (one per window preset): its first, as a float."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = list(value)[0]  # type: ignore[call-overload]
    return float(value)  # type: ignore[arg-type]


def dicom_pixels(path: Path, window: str = FILE_WINDOW) -> np.ndarray:
    """The image of DICOM file ``path``: (H, W) uint8 for a grayscale scan (windowed by ``window``, see
    :func:`parse_window`), (H, W, 3) uint8 for a colour one. Raises ``ValueError``/``OSError`` for a file pydicom
    cannot read or decode (e.g. compressed pixel data without its decoder package)."""
    import pydicom

    try:
        data = pydicom.dcmread(path)
        pixels = data.pixel_array
    except (pydicom.errors.InvalidDicomError, AttributeError, KeyError, NotImplementedError, RuntimeError) as err:
        raise ValueError(f"not a DICOM image pydicom can decode ({first_line(err)})") from None
    samples = int(getattr(data, "SamplesPerPixel", 1))
    frames = int(getattr(data, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples == 3:
        return np.asarray(pixels, dtype=np.uint8) if pixels.dtype == np.uint8 else _full_range(pixels)
    values = pixels.astype(np.float64) * float(getattr(data, "RescaleSlope", 1) or 1) + float(
        getattr(data, "RescaleIntercept", 0) or 0
    )
    chosen = parse_window(window)
    if chosen == FILE_WINDOW and "WindowCenter" in data and "WindowWidth" in data and _first(data.WindowWidth) > 0:
        out = apply_window(values, _first(data.WindowCenter), _first(data.WindowWidth))
    elif isinstance(chosen, tuple):
        out = apply_window(values, *chosen)
    else:
        out = _full_range(values)
    inverted = getattr(data, "PhotometricInterpretation", "") == "MONOCHROME1"
    return np.uint8(_TOP) - out if inverted else out


def _full_range(values: np.ndarray) -> np.ndarray:
    """``values`` scaled from their own minimum (0) to maximum (255); a flat image is 0."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.round((values.astype(np.float64) - low) / (high - low) * _TOP), 0, _TOP).astype(np.uint8)
