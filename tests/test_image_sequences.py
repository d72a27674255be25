from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from invprop.data import decode_cache, image_sequences
from invprop.data.datasets import scan_image_folder
from invprop.data.decode_cache import cached_image_files, to_tensor_images
from invprop.data.image_sequences import TensorImages
from invprop.errors import DataError


def write_pngs(folder: Path, sizes: list[int]) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = []
    for i, size in enumerate(sizes):
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"{i:03d}.png")
        arrays.append(array)
    return arrays


def test_tensor_images_return_float_images_in_unit_range() -> None:
    images = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    seq = TensorImages(images, torch.tensor([3]))
    image, label = seq[0]
    assert label == 3 and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.tensor([[[0.0, 1.0], [0.2, 0.4]]]))
    with pytest.raises(ValueError, match="labels"):
        TensorImages(images, torch.tensor([1, 2]))


def test_image_files_are_decoded_exactly_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_pngs(tmp_path / "imgs", [6, 6, 6])
    files = scan_image_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    first = cached_image_files(files, cache)
    assert first.images.dtype == torch.uint8 and first.images.shape == (3, 3, 6, 6)
    assert torch.equal(first.images[1].permute(1, 2, 0), torch.from_numpy(arrays[1]))
    assert len(list(cache.glob("images-*.pt"))) == 1

    def fail(*_args: object) -> None:  # a second call must read the cache, not decode
        raise AssertionError("decoded again")

    monkeypatch.setattr(decode_cache, "_decode_files", fail)
    assert torch.equal(cached_image_files(files, cache).images, first.images)
    # Changing a file changes the key, so stale caches are never used.
    Image.fromarray(arrays[0][::-1].copy()).save(tmp_path / "imgs" / "000.png")
    with pytest.raises(AssertionError, match="decoded again"):
        cached_image_files(scan_image_folder(tmp_path / "imgs"), cache)


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs", [4, 4])
    files = scan_image_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    good = cached_image_files(files, cache)
    next(cache.glob("images-*.pt")).write_bytes(b"not a tensor file")
    assert torch.equal(cached_image_files(files, cache).images, good.images)


def test_a_cache_that_cannot_be_written_is_skipped_with_one_warning(
    tmp_path: Path, fail_writes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache is an optimisation: a full disk costs the cache, not the run (the run's own files still fail)."""
    write_pngs(tmp_path / "imgs", [4, 4])
    files = scan_image_folder(tmp_path / "imgs")
    fail_writes("images-*.pt", errno.ENOSPC)
    decoded = cached_image_files(files, tmp_path / "cache")
    assert decoded.images.shape[0] == 2
    assert "could not write the image cache" in caplog.text and "No space left on device (ENOSPC)" in caplog.text
    assert list((tmp_path / "cache").iterdir()) == []  # no cache, no temporary file


def test_mixed_sizes_without_a_working_side_are_refused_with_a_hint(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs", [4, 5])
    with pytest.raises(DataError, match="pipeline=per_image"):
        cached_image_files(scan_image_folder(tmp_path / "imgs"), None)
    assert cached_image_files(scan_image_folder(tmp_path / "imgs"), None, side=3).images.shape == (2, 3, 3, 3)


def test_generic_sequences_are_stacked() -> None:
    seq = [(torch.rand(1, 3, 3), 1), (torch.rand(1, 3, 3), 0)]
    out = to_tensor_images(seq)
    assert out.images.shape == (2, 1, 3, 3) and out.targets == [1, 0]


def _broken_and_odd_folder(root: Path) -> dict[str, Path]:
    """One class folder with every kind of file the issue lists (readable ones and broken ones)."""
    folder = root / "cls"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    files = {
        "rgb": folder / "rgb.png",
        "gray": folder / "gray.png",
        "rgba": folder / "rgba.png",
        "palette": folder / "palette.png",
        "sixteen": folder / "sixteen.png",
        "empty": folder / "empty.png",
        "truncated": folder / "truncated.jpg",
        "text": folder / "notes.jpg",
    }
    Image.fromarray(rgb).save(files["rgb"])
    Image.fromarray(rgb[..., 0]).save(files["gray"])
    Image.fromarray(np.dstack([rgb, np.full((6, 6), 128, np.uint8)])).save(files["rgba"])
    Image.fromarray(rgb).convert("P").save(files["palette"])
    Image.fromarray((np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800)).save(files["sixteen"])
    files["empty"].write_bytes(b"")
    Image.fromarray(rgb).save(folder / "full.jpg")
    files["truncated"].write_bytes((folder / "full.jpg").read_bytes()[:-200])
    (folder / "full.jpg").unlink()
    files["text"].write_text("not an image")
    return files


def test_odd_files_decode_and_broken_ones_are_skipped_or_refused(tmp_path: Path) -> None:
    from invprop.data.decode_cache import check_image_files
    from invprop.data.image_sequences import load_rgb

    files = _broken_and_odd_folder(tmp_path)
    for kind in ("gray", "rgba", "palette", "sixteen"):
        assert load_rgb(files[kind]).mode == "RGB" and load_rgb(files[kind]).size == (6, 6)
    wide = np.asarray(load_rgb(files["sixteen"]))[..., 0]
    assert wide.max() > 200 and wide[0, 1] == round(1800 / 65535 * 255)  # scaled to 8 bits, not clipped at 255
    listing = scan_image_folder(tmp_path)
    kept, skipped = check_image_files(listing, strict=False, cache_dir=tmp_path / "cache")
    assert sorted(Path(p).name for p in skipped) == ["empty.png", "notes.jpg", "truncated.jpg"]
    assert len(kept) == 5 and all(kept[i][0].mode == "RGB" for i in range(5))
    with pytest.raises(DataError, match="3 unreadable image file.*empty.png.*--strict-data"):
        check_image_files(listing, strict=True)
    # The verdict is cached: a second check does not decode.
    assert len(list((tmp_path / "cache").glob("checked-*.json"))) == 1


def test_reading_in_several_processes_equals_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invprop.data.image_sequences import decode_chunk, map_file_chunks, readable_chunk

    paths = []
    for i in range(9):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((5, 4, 3), i * 20, dtype=np.uint8)).save(path)
        paths.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    monkeypatch.setattr(image_sequences, "READ_CHUNK_FILES", 2)  # 5 chunks over 2 processes
    assert map_file_chunks(readable_chunk, [*paths, broken], 2) == [True] * 9 + [False]
    arrays = map_file_chunks(decode_chunk, paths, 2)
    assert [int(a[0, 0, 0]) for a in arrays] == [i * 20 for i in range(9)] and arrays[0].shape == (5, 4, 3)


def test_links_that_lead_nowhere_are_counted_as_unreadable_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Dangling and looping links are listed, then skipped and counted (or refused under --strict-data) by the
    readability check; the scan never stats a link's target (an EACCES target used to crash it); a folder that
    cannot be listed is left out with a warning; a FIFO named like an image is no image."""
    import os

    from invprop.data.decode_cache import check_image_files

    write_pngs(tmp_path / "cats", [4, 4])
    write_pngs(tmp_path / "dogs", [4])
    (tmp_path / "dogs" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "dogs" / "loop.png").symlink_to(tmp_path / "dogs" / "loop.png")
    (tmp_path / "dogs" / "alias.png").symlink_to(tmp_path / "cats" / "000.png")
    os.mkfifo(tmp_path / "dogs" / "pipe.png")
    (tmp_path / "dogs" / "to-pipe.png").symlink_to(tmp_path / "dogs" / "pipe.png")  # reading it would block
    (tmp_path / "dogs" / "locked").mkdir()
    write_pngs(tmp_path / "dogs" / "locked", [4])
    real_scandir = os.scandir

    def refuse_locked(path: Any = ".") -> Any:  # what a folder without read permission does (root ignores chmod)
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    listing = scan_image_folder(tmp_path)
    monkeypatch.undo()
    names = [f.name for f in listing.files]
    assert names == ["000.png", "001.png", "000.png", "alias.png", "gone.png", "loop.png"]
    assert listing.classes == ["cats", "dogs"] and listing.targets == [0, 0, 1, 1, 1, 1]
    assert "1 folder(s) under" in caplog.text and "locked (Permission denied)" in caplog.text
    kept, skipped = check_image_files(listing, strict=False, cache_dir=tmp_path / "cache")  # keyed, links and all
    assert sorted(Path(p).name for p in skipped) == ["gone.png", "loop.png"] and len(kept) == 4
    with pytest.raises(DataError, match="2 unreadable image file.*gone.png.*--strict-data"):
        check_image_files(listing, strict=True)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux /proc")
def test_a_folder_of_no_images_such_as_proc_is_one_line() -> None:
    with pytest.raises(DataError, match=r"^no images \(.*\) found under /proc$"):
        scan_image_folder(Path("/proc"))
