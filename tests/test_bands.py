"""Image folders of band arrays: multispectral TIFF and .npy files, 16-bit bands, the band count from the files, the
normalisation measured on them, colour-free augmentation, and a 5-band folder trained through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from invprop.cli import main
from invprop.data import bands
from invprop.data.bands import load_bands, read_bands, square_bands, to_uint8
from invprop.engine import load_checkpoint

tifffile = pytest.importorskip("tifffile")

BANDS = 5
SIDE = 16


def _band_digits(root: Path, per_split: dict[str, int], suffix: str = ".tif") -> None:
    """scikit-learn's digits as 5-band 16-bit images in ``root/<split>/<digit>/``: band b holds the digit scaled by
    (b + 1) / 5 of the 16-bit range, so each band has its own mean."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    first = 0
    for split, count in per_split.items():
        for i in range(first, first + count):
            digit = np.kron(bunch.images[i] / 16.0, np.ones((SIDE // 8, SIDE // 8)))
            stack = np.stack([digit * (b + 1) / BANDS * 65535 for b in range(BANDS)], axis=-1).astype(np.uint16)
            folder = root / split / str(bunch.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            if suffix == ".npy":
                np.save(folder / f"{i:04d}.npy", stack)
            else:
                tifffile.imwrite(folder / f"{i:04d}.tif", np.moveaxis(stack, -1, 0), photometric="minisblack")
        first += count


def test_to_uint8_scales_each_type_from_its_full_scale() -> None:
    assert np.array_equal(to_uint8(np.array([0, 257, 65535], dtype=np.uint16)), np.array([0, 1, 255], np.uint8))
    assert np.array_equal(to_uint8(np.array([0.0, 0.5, 1.0, 2.0])), np.array([0, 128, 255, 255], np.uint8))
    assert np.array_equal(to_uint8(np.array([-32768, 32767], dtype=np.int16)), np.array([0, 255], np.uint8))
    assert np.array_equal(to_uint8(np.array([True, False])), np.array([255, 0], np.uint8))
    raw = np.array([3, 200], dtype=np.uint8)
    assert to_uint8(raw) is raw


def test_tiff_layouts_and_npy_read_as_height_width_bands(tmp_path: Path) -> None:
    stack = np.arange(6 * 4 * BANDS, dtype=np.uint16).reshape(6, 4, BANDS)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(stack, -1, 0), photometric="minisblack")
    tifffile.imwrite(tmp_path / "contig.tif", stack, photometric="minisblack", planarconfig="contig")
    np.save(tmp_path / "a.npy", stack)
    np.save(tmp_path / "gray.npy", stack[:, :, 0])
    for name in ("planar.tif", "contig.tif", "a.npy"):
        assert np.array_equal(read_bands(tmp_path / name), stack), name
    assert read_bands(tmp_path / "gray.npy").shape == (6, 4, 1)
    assert bands.folder_reads_bands([tmp_path / "planar.tif"]) and bands.folder_reads_bands([tmp_path / "a.npy"])
    assert bands.folder_reads_bands([tmp_path / "contig.tif"])  # Pillow cannot read it: tifffile counts 5 bands


def test_square_bands_crops_the_centre_and_keeps_flat_bands_flat() -> None:
    wide = np.zeros((4, 8, 2), dtype=np.uint8)
    wide[:, 2:6, 0] = 200  # the centre 4 columns of band 0
    out = square_bands(wide, 4)
    assert out.shape == (4, 4, 2) and (out[:, :, 0] == 200).all() and (out[:, :, 1] == 0).all()
    flat = np.full((10, 14, 7), 77, dtype=np.uint8)
    assert (square_bands(flat, 5) == 77).all() and square_bands(flat, 5).shape == (5, 5, 7)


def _train(folder: Path, run: Path, *extra: str) -> list[str]:
    return ["-q", "train", "--epochs", "1", "--set", f"data.name=imagefolder:{folder}", "--set",
            f"data.image_size={SIDE}", "--set", "optim.batch_size=32", "--set", "loss.rampup_epochs=1", *extra,
            "--out", str(run)]  # fmt: skip


@pytest.fixture(scope="module")
def band_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bands") / "tiff"
    _band_digits(folder, {"train": 150, "test": 50})
    return folder


def test_a_5_band_tiff_folder_trains_with_its_own_bands_and_normalisation(band_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(_train(band_folder, run)) == 0
    line = json.loads((run / "history.jsonl").read_text().splitlines()[-1])
    assert line["epoch"] == 1 and line["knn_top1"] > 0.1
    state = load_checkpoint(run / "last.pt")
    assert state["input"]["in_channels"] == BANDS
    files = sorted((band_folder / "train").rglob("*.tif"), key=lambda p: (p.parent.name, p.name))
    pixels = np.stack([load_bands(path, SIDE) for path in files]).astype(np.float64) / 255
    assert state["input"]["mean"] == pytest.approx(pixels.mean(axis=(0, 1, 2)).tolist(), abs=1e-9)
    assert state["input"]["std"] == pytest.approx(pixels.std(axis=(0, 1, 2)).tolist(), abs=1e-9)
    means = state["input"]["mean"]
    assert all(a < b for a, b in zip(means, means[1:]))  # band b is (b + 1) / 5 of the range: its own statistics
    first = next(v for k, v in state["model"].items() if v.dim() == 4)
    assert first.shape[1] == BANDS  # the first convolution takes the five bands
    config = (run / "config.yaml").read_text()
    assert "augment: null" in config or "augment: crop_flip" in config


def test_a_band_folder_refuses_a_colour_augmentation_and_another_channel_count(
    band_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra, said in (
        (("--set", "data.augment=cifar"), "data.augment=cifar changes colours, which 5-band images do not have"),
        (("--set", "data.channels=3"), "data.channels=3, but the images of"),
    ):
        capsys.readouterr()
        assert main(_train(band_folder, tmp_path / "run", *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err, err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_batch_augmentation_of_a_band_folder_changes_no_colour(band_folder: Path) -> None:
    from invprop.data.splits import build_datasets

    splits = build_datasets(f"imagefolder:{band_folder}", image_size=SIDE, pipeline="tensor", cache_dir=None)
    assert splits.in_channels == BANDS and splits.batch_augment is not None
    assert not any(getattr(op, "changes_colour", False) for op in splits.batch_augment.ops)
    images = splits.train_images.images[:4].float() / 255
    out = splits.batch_augment(images, torch.Generator().manual_seed(0))
    assert out.shape == (4, BANDS, SIDE, SIDE) and torch.isfinite(out).all()


def test_an_unlabelled_npy_folder_trains_on_the_per_image_pipeline_too(tmp_path: Path) -> None:
    _band_digits(tmp_path / "arrays", {"train": 120}, suffix=".npy")
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in (tmp_path / "arrays" / "train").rglob("*.npy"):
        path.rename(flat / f"{path.parent.name}-{path.name}")
    run = tmp_path / "run"
    assert main(_train(flat, run, "--set", "data.pipeline=per_image")) == 0
    assert load_checkpoint(run / "last.pt")["input"]["in_channels"] == BANDS


def test_a_multi_band_tiff_without_tifffile_is_one_line_naming_the_extra(
    band_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = bands.importlib.util.find_spec
    monkeypatch.setattr(bands.importlib.util, "find_spec", lambda name: None if name == "tifffile" else real(name))
    capsys.readouterr()
    assert main(_train(band_folder, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs tifffile: pip install 'invprop[multispectral]'" in err


def test_a_damaged_first_tiff_leaves_a_folder_of_ordinary_images_ordinary(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a0.tif").write_bytes(b"not a tiff" * 10)
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / f"b{i}.tif")
    files = sorted(tmp_path.glob("*.tif"))
    assert not bands.folder_reads_bands(files)
    with pytest.raises(ValueError):
        read_bands(tmp_path / "a0.tif")  # read as bands, a damaged file is an unreadable file, not a crash


def test_rgba_is_ordinary_and_rgb_plus_near_infrared_is_bands(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGBA", (8, 8)).save(tmp_path / "rgba.tif")
    tifffile.imwrite(tmp_path / "nir.tif", np.zeros((8, 8, 4), np.uint8), photometric="rgb", extrasamples=[0])
    assert not bands.folder_reads_bands([tmp_path / "rgba.tif"])
    assert bands.folder_reads_bands([tmp_path / "nir.tif"])
    assert read_bands(tmp_path / "nir.tif").shape == (8, 8, 4)


def test_a_folder_mixing_arrays_and_images_is_refused(tmp_path: Path) -> None:
    from invprop.errors import DataError

    np.save(tmp_path / "features.npy", np.zeros((4, 4)))
    (tmp_path / "photo.png").write_bytes(b"")
    with pytest.raises(DataError, match="mixes .npy arrays"):
        bands.folder_reads_bands(sorted(tmp_path.iterdir()))


def test_the_report_shows_a_band_image_as_the_mean_of_its_bands() -> None:
    from invprop.evaluation.report import _as_picture

    image = torch.zeros(5, 4, 6)
    image[2, 1, 1] = 5.0
    picture = _as_picture(image)
    assert picture.shape == (4, 6) and picture[1, 1] == pytest.approx(1.0) and picture[0, 0] == 0


def test_the_fitted_side_of_dicom_and_band_folders_comes_from_their_headers(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from dicom_folder import write_dicom
    from invprop.config.fitted import folder_facts

    (tmp_path / "bands").mkdir()
    for i in range(3):
        write_dicom(tmp_path / "scans" / f"{i}.dcm", np.zeros((40, 48)))
        tifffile.imwrite(tmp_path / "bands" / f"{i}.tif", np.zeros((30, 20, 6), np.uint16), photometric="minisblack",
                         planarconfig="contig")  # fmt: skip
    assert folder_facts(tmp_path / "scans").shorter_side == 40
    facts = folder_facts(tmp_path / "bands")
    assert facts.shorter_side == 20 and facts.bands and facts.channels == 6
