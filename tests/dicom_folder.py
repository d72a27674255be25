"""DICOM files for the DICOM tests, written with pydicom: 16-bit CT-like scans with a rescale and a window."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(
    path: Path,
    stored: np.ndarray,
    slope: float = 1.0,
    intercept: float = -1024.0,
    window: tuple[float, float] | None = None,
    photometric: str = "MONOCHROME2",
) -> Path:
    """``stored`` (H, W) as an uncompressed 16-bit CT image at ``path``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    data = Dataset()
    data.file_meta = meta
    data.SOPClassUID = CTImageStorage
    data.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    data.Modality = "CT"
    data.Rows, data.Columns = stored.shape
    data.SamplesPerPixel = 1
    data.PhotometricInterpretation = photometric
    data.BitsAllocated, data.BitsStored, data.HighBit, data.PixelRepresentation = 16, 16, 15, 0
    data.RescaleSlope, data.RescaleIntercept = slope, intercept
    if window is not None:
        data.WindowCenter, data.WindowWidth = window
    data.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    data.save_as(path, enforce_file_format=True)
    return path


def write_dicom_digits(root: Path, per_split: dict[str, int], side: int = 16) -> None:
    """scikit-learn's digits as CT-like scans in ``root/<split>/<digit>/*.dcm`` (labelled ImageFolder layout):
    stored values 0..2000 on a 0-centred rescale, with a window in each file."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    first = 0
    for split, count in per_split.items():
        for i in range(first, first + count):
            small = bunch.images[i] / 16.0
            pixels = np.kron(small, np.ones((side // 8, side // 8))) * 2000
            write_dicom(root / split / str(bunch.target[i]) / f"{i:04d}.dcm", np.round(pixels), intercept=-1000,
                        window=(0, 2000))  # fmt: skip
        first += count
