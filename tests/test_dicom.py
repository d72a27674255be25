"""DICOM files in image folders: windowing against a per-pixel oracle, the file's window, MONOCHROME1, a missing
pydicom in one line, and a DICOM folder trained through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

from dicom_folder import write_dicom, write_dicom_digits  # noqa: E402
from invprop.cli import main  # noqa: E402
from invprop.data import dicom  # noqa: E402
from invprop.data.dicom import dicom_pixels, parse_window  # noqa: E402
from invprop.data.image_sequences import load_rgb  # noqa: E402
from invprop.errors import ConfigError  # noqa: E402

STORED = (np.arange(64).reshape(8, 8) * 40).astype(np.uint16)  # 0 .. 2520


def _oracle(stored: np.ndarray, slope: float, intercept: float, center: float, width: float) -> np.ndarray:
    """The linear window, pixel by pixel."""
    out = np.zeros(stored.shape, dtype=np.uint8)
    for (row, col), value in np.ndenumerate(stored):
        hu = float(value) * slope + intercept
        low, high = center - width / 2, center + width / 2
        level = 0.0 if hu <= low else 255.0 if hu >= high else (hu - low) / width * 255
        out[row, col] = int(np.floor(level + 0.5))
    return out


def test_a_given_window_maps_modality_values_as_the_oracle(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", STORED, slope=2.0, intercept=-1024, window=(1000, 10))
    assert np.array_equal(dicom_pixels(path, "40,400"), _oracle(STORED, 2.0, -1024, 40, 400))
    assert np.array_equal(dicom_pixels(path, "file"), _oracle(STORED, 2.0, -1024, 1000, 10))  # the file's own
    assert not np.array_equal(dicom_pixels(path, "file"), dicom_pixels(path, "40,400"))


def test_full_range_and_monochrome1(tmp_path: Path) -> None:
    plain = write_dicom(tmp_path / "plain.dcm", STORED)  # no window in the file: its full range
    expected = np.round(STORED.astype(np.float64) / STORED.max() * 255).astype(np.uint8)
    assert np.array_equal(dicom_pixels(plain, "file"), expected)
    assert np.array_equal(dicom_pixels(plain, "full"), expected)
    inverted = write_dicom(tmp_path / "m1.dcm", STORED, photometric="MONOCHROME1")
    assert np.array_equal(dicom_pixels(inverted, "full"), 255 - expected)
    image = load_rgb(plain, side=4)  # through the folder reader: RGB, squared to the working side
    assert image.mode == "RGB" and image.size == (4, 4)


@pytest.mark.parametrize("text", ["40", "40,0", "a,b", "40,400,1", "window"])
def test_a_bad_window_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="data.dicom_window must be"):
        parse_window(text)
    assert parse_window("-600,1500") == (-600.0, 1500.0)


def test_a_file_that_is_not_dicom_is_an_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a scan" * 20)
    with pytest.raises((ValueError, OSError)):
        dicom_pixels(bad)


def test_a_dicom_folder_trains_and_its_cache_holds_the_windowed_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "scans"
    write_dicom_digits(folder, {"train": 120, "test": 40})
    run = tmp_path / "run"
    args = ["-q", "train", "--epochs", "1", "--set", f"data.name=imagefolder:{folder}", "--set", "data.image_size=16",
            "--set", "optim.batch_size=32", "--set", "loss.rampup_epochs=1", "--set", "data.dicom_window=1000,2000",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--out", str(run)]  # fmt: skip
    assert main(args) == 0
    line = json.loads((run / "history.jsonl").read_text().splitlines()[-1])
    assert line["epoch"] == 1 and line["knn_top1"] > 0.1  # labelled by class folder, scored on test/
    from invprop.data.datasets import scan_image_folder
    from invprop.data.decode_cache import cached_image_files

    files = scan_image_folder(folder / "train", "1000,2000")
    images = cached_image_files(files, tmp_path / "cache", 16).images
    first = np.asarray(load_rgb(files.files[0], 16, "1000,2000"))
    assert np.array_equal(images[0].permute(1, 2, 0).numpy(), first)
    other = cached_image_files(scan_image_folder(folder / "train", "full"), tmp_path / "cache", 16).images
    assert not np.array_equal(other.numpy(), images.numpy())  # the window is part of the cache's key


def test_dicom_files_without_pydicom_are_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_dicom(tmp_path / "scans" / "a.dcm", STORED)
    write_dicom(tmp_path / "scans" / "b.dcm", STORED)
    real = dicom.importlib.util.find_spec
    monkeypatch.setattr(dicom.importlib.util, "find_spec", lambda name: None if name == "pydicom" else real(name))
    capsys.readouterr()
    code = main(["-q", "train", "--epochs", "1", "--set", f"data.name=imagefolder:{tmp_path / 'scans'}",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "holds DICOM files, which need pydicom: pip install 'invprop[dicom]'" in err


def test_a_bad_window_on_the_command_line_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_dicom_digits(tmp_path / "scans", {"train": 20})
    capsys.readouterr()
    code = main(["-q", "train", "--epochs", "1", "--set", f"data.name=imagefolder:{tmp_path / 'scans'}",
                 "--set", "data.dicom_window=40", "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "data.dicom_window must be" in err
