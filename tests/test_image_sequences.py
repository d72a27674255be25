from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invprop.data import image_sequences
from invprop.data.datasets import scan_image_folder
from invprop.data.image_sequences import TensorImages, cached_image_files, to_tensor_images
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

    def fail(_files):  # a second call must read the cache, not decode
        raise AssertionError("decoded again")

    monkeypatch.setattr(image_sequences, "_decode_files", fail)
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


def test_mixed_sizes_are_refused_with_a_hint(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs", [4, 5])
    with pytest.raises(DataError, match="pipeline=per_image"):
        cached_image_files(scan_image_folder(tmp_path / "imgs"), None)


def test_generic_sequences_are_stacked() -> None:
    seq = [(torch.rand(1, 3, 3), 1), (torch.rand(1, 3, 3), 0)]
    out = to_tensor_images(seq)
    assert out.images.shape == (2, 1, 3, 3) and out.targets == [1, 0]
