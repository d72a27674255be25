"""invprop.data.decode_cache: a folder of any sizes and modes decoded once at the working size, a cache verified on
load (a damaged, foreign or stale cache is decoded again), and file names that are not UTF-8."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from invprop.data import build_datasets, decode_cache, image_sequences
from invprop.data.datasets import scan_image_folder
from invprop.data.decode_cache import cached_image_files, check_image_files
from invprop.data.image_sequences import load_rgb

#: The EXIF tag of the orientation, and the value "rotate 90 degrees clockwise to view".
ORIENTATION, ROTATE_CW = 0x0112, 6


def _mixed_folder(root: Path) -> None:
    """Images of 16 to 1,000 pixels in every mode users have, and a JPEG whose EXIF says to rotate it."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    Image.fromarray(rgb(16, 16)).save(root / "rgb16.png")
    Image.fromarray(rgb(1000, 700)).save(root / "rgb1000.png")
    Image.fromarray(rgb(40, 60)[..., 0]).save(root / "gray.png")
    Image.fromarray(rgb(50, 30)[..., 0]).convert("LA").save(root / "gray_alpha.png")
    Image.fromarray(np.dstack([rgb(33, 33), np.full((33, 33), 9, np.uint8)])).save(root / "rgba.png")
    Image.fromarray(rgb(64, 48)).convert("P").save(root / "palette.png")
    Image.fromarray((rng.integers(0, 65536, (70, 90))).astype(np.uint16)).save(root / "sixteen.png")
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATE_CW
    Image.fromarray(rgb(120, 200)).save(root / "phone.jpg", exif=exif.tobytes())
    Image.fromarray(rgb(300, 300)).convert("CMYK").save(root / "cmyk.jpg")


def _counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    decoded: list[int] = []
    real: Callable[..., list[np.ndarray]] = image_sequences.decode_chunk

    def counting(paths: list[Path], side: int | None = None, **how: Any) -> list[np.ndarray]:
        decoded.append(len(paths))
        return real(paths, side, **how)

    monkeypatch.setattr(decode_cache, "decode_chunk", counting)
    return decoded


def test_a_folder_of_every_size_and_mode_trains_on_the_tensor_pipeline_and_decodes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mixed_folder(tmp_path / "photos")
    decoded = _counting_decodes(monkeypatch)
    kwargs = {"image_size": 24, "pipeline": "auto", "cache_dir": tmp_path / "cache", "holdout": 0.0}
    first = build_datasets(f"imagefolder:{tmp_path / 'photos'}", **kwargs)
    assert first.pipeline == "tensor" and first.train_images is not None
    assert first.train_images.images.shape == (9, 3, 24, 24) and sum(decoded) == 9
    second = build_datasets(f"imagefolder:{tmp_path / 'photos'}", **kwargs)
    assert sum(decoded) == 9  # counted: the second run decoded nothing
    assert second.train_images is not None and torch.equal(second.train_images.images, first.train_images.images)


def test_an_exif_rotation_stands_the_photo_up_and_a_working_side_is_a_centre_square(tmp_path: Path) -> None:
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :5] = 255  # a white band on the left of the stored image
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATE_CW
    Image.fromarray(pixels).save(tmp_path / "p.png", exif=exif.tobytes())
    upright = np.asarray(load_rgb(tmp_path / "p.png"))
    assert upright.shape == (20, 10, 3) and upright[:5].mean() > 200 and upright[-5:].mean() < 50  # on top now
    assert load_rgb(tmp_path / "p.png", side=8).size == (8, 8)


def _one_cache(tmp_path: Path) -> tuple[object, Path, torch.Tensor]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    files = scan_image_folder(folder)
    good = cached_image_files(files, tmp_path / "cache", side=16).images
    return files, next((tmp_path / "cache").glob("images-*.pt")), good


def test_a_damaged_cache_is_noticed_and_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    files, path, good = _one_cache(tmp_path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)  # zeroed inside the image bytes: still a valid torch file
    path.write_bytes(bytes(data))
    decoded = _counting_decodes(monkeypatch)
    assert torch.equal(cached_image_files(files, tmp_path / "cache", side=16).images, good)  # type: ignore[arg-type]
    assert sum(decoded) == 40 and "not the decoded folder" in caplog.text


@pytest.mark.parametrize(
    "payload",
    [{"images": [1, 2, 3]}, [1, 2, 3], torch.zeros(7, dtype=torch.uint8), "wrong-side"],
    ids=["dict-of-list", "list", "1-d-tensor", "right-count-other-side"],
)
def test_a_cache_of_another_structure_is_ignored_with_a_warning(
    tmp_path: Path, payload: object, caplog: pytest.LogCaptureFixture
) -> None:
    files, path, good = _one_cache(tmp_path)
    if payload == "wrong-side":
        saved = torch.load(path, weights_only=True)
        images = torch.zeros(40, 3, 8, 8, dtype=torch.uint8)
        payload = {**saved, "images": images, "sha256": decode_cache.checksum(images)}
    torch.save(payload, path)
    assert torch.equal(cached_image_files(files, tmp_path / "cache", side=16).images, good)  # type: ignore[arg-type]
    assert "ignoring image cache" in caplog.text


@pytest.mark.parametrize("listed", [[99999999], [-1], ["3"], [2, 2], {"unreadable": 1}])
def test_a_check_cache_that_does_not_describe_the_folder_is_checked_again(
    tmp_path: Path, listed: object, caplog: pytest.LogCaptureFixture
) -> None:
    files, _, _ = _one_cache(tmp_path)
    check_image_files(files, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    path = next((tmp_path / "cache").glob("checked-*.json"))
    path.write_text(json.dumps(listed if isinstance(listed, dict) else {"unreadable": listed}))
    kept, skipped = check_image_files(files, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    assert len(kept) == 40 and skipped == [] and "checking again" in caplog.text


@pytest.mark.skipif(sys.platform != "linux", reason="file names as raw bytes")
def test_file_names_that_are_not_utf8_are_keyed_and_cached(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(folder / "ok.png")
    odd = os.path.join(os.fsencode(folder), b"bad\xff\xfe0.png")
    with open(odd, "wb") as handle:
        Image.fromarray(np.full((6, 6, 3), 200, np.uint8)).save(handle, format="PNG")
    files = scan_image_folder(folder)
    assert cached_image_files(files, tmp_path / "cache").images.shape == (2, 3, 6, 6)
