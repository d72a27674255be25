from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invprop.data import RandomDigitAugment, build_datasets
from invprop.errors import DataError


def test_digits_split_is_fixed_and_stratified() -> None:
    a = build_datasets("digits")
    b = build_datasets("digits")
    assert (len(a.train), len(a.test)) == (1347, 450)
    assert torch.equal(a.train.labels, b.train.labels) and torch.equal(a.test.labels, b.test.labels)
    train_counts = Counter(a.train.labels.tolist())
    test_counts = Counter(a.test.labels.tolist())
    for c in range(10):
        assert abs(test_counts[c] / 450 - train_counts[c] / 1347) < 0.01
    index, image, label = a.train[7]
    assert index == 7 and image.shape == (1, 8, 8) and label == int(a.train.labels[7])
    _, eval_image, _ = a.memory[7]
    _, again, _ = a.memory[7]
    assert torch.equal(eval_image, again)  # eval transform is deterministic


def test_digit_augment_keeps_shape_range_and_is_seeded() -> None:
    aug = RandomDigitAugment()
    x = torch.rand(16, 1, 8, 8)
    y1 = aug(x, torch.Generator().manual_seed(0))
    y2 = aug(x, torch.Generator().manual_seed(0))
    assert y1.shape == x.shape and torch.equal(y1, y2)
    assert y1.min() >= 0 and y1.max() <= 1
    assert not torch.equal(y1, aug(x, torch.Generator().manual_seed(1)))
    assert aug(x[0]).shape == (1, 8, 8)


def _write_images(folder: Path, count: int, size: int = 12) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_labelled_image_folder_with_train_and_test(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            _write_images(tmp_path / split / cls, n)
    splits = build_datasets(f"imagefolder:{tmp_path}", image_size=8)
    assert splits.labelled and splits.num_classes == 2
    assert (len(splits.train), len(splits.test)) == (6, 4)
    index, image, label = splits.train[4]
    assert index == 4 and image.shape == (3, 8, 8) and label == 1


def test_unlabelled_image_folder_turns_monitor_off(tmp_path: Path) -> None:
    _write_images(tmp_path, 5)
    splits = build_datasets(f"imagefolder:{tmp_path}", image_size=8)
    assert not splits.labelled and splits.num_classes == 0
    assert splits.train[0][2] == -1


def test_missing_data_gives_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="CIFAR-10 not found.*cifar-10-batches-py"):
        build_datasets("cifar10", root=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        build_datasets(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        build_datasets(f"imagefolder:{tmp_path / 'empty'}")


def test_cifar10_jpeg_copy_reads_as_image_folder(cifar_tarball: Path, tmp_path: Path) -> None:
    per_class = 3
    with tarfile.open(cifar_tarball) as tar:
        wanted = []
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-1] in {f"{i:04d}.jpg" for i in range(per_class)}:
                wanted.append(member)
        tar.extractall(tmp_path, members=wanted, filter="data")
    splits = build_datasets(f"imagefolder:{tmp_path}")  # the tarball holds train/<class>/ and test/<class>/
    assert splits.num_classes == 10
    assert len(splits.train) == 10 * per_class and len(splits.test) == 10 * per_class
    _, image, _ = splits.test[0]
    assert image.shape == (3, 32, 32)


def test_tensor_pipeline_on_the_cifar10_jpeg_copy(cifar_tarball: Path, tmp_path: Path) -> None:
    with tarfile.open(cifar_tarball) as tar:
        wanted = [m for m in tar if m.isfile() and Path(m.name).name in {"0000.jpg", "0001.jpg"}]
        tar.extractall(tmp_path / "data", members=wanted, filter="data")
    name = f"imagefolder:{tmp_path / 'data'}"
    splits = build_datasets(name, pipeline="tensor", cache_dir=tmp_path / "cache")
    assert splits.pipeline == "tensor" and splits.train_images is not None
    assert splits.train_images.images.shape == (20, 3, 32, 32) and splits.train_images.images.dtype == torch.uint8
    # The cached tensor holds the same pixels the per-image path decodes.
    per_image = build_datasets(name, pipeline="per_image")
    source_image, _ = per_image.train.source[3]
    assert torch.equal(splits.train_images.images[3], torch.from_numpy(np.array(source_image)).permute(2, 0, 1))
    assert len(list((tmp_path / "cache").glob("images-*.pt"))) == 2  # train and test
    assert build_datasets(name, pipeline="auto").pipeline == "tensor"  # a folder that fits in memory: tensors


def test_a_folder_is_decoded_at_the_working_size(tmp_path: Path) -> None:
    _write_images(tmp_path, 4, size=12)
    splits = build_datasets(f"imagefolder:{tmp_path}", image_size=8, pipeline="tensor")
    assert splits.train_images is not None and tuple(splits.train_images.images.shape[1:]) == (3, 8, 8)
    with pytest.raises(DataError, match="pipeline must be one of"):
        build_datasets("digits", pipeline="fast")


def test_subset_is_fixed_stratified_and_shared_with_the_monitor() -> None:
    full = build_datasets("digits", pipeline="tensor")
    a = build_datasets("digits", pipeline="tensor", subset=500)
    b = build_datasets("digits", pipeline="per_image", subset=500)
    assert len(a.train) == len(b.train) == len(a.memory) == 500
    assert len(a.test) == len(full.test)  # the held-out split is untouched
    assert torch.equal(a.train.labels, b.train.labels)
    counts = Counter(a.train.labels.tolist())
    full_counts = Counter(full.train.labels.tolist())
    for c in range(10):
        assert abs(counts[c] / 500 - full_counts[c] / 1347) < 0.01
    torch.testing.assert_close(a.memory[3][1], b.memory[3][1])  # same images in the same order
    with pytest.raises(DataError, match="data.subset"):
        build_datasets("digits", subset=5000)


def test_multi_view_draws_independent_views() -> None:
    from invprop.data.transforms import MultiView, RandomDigitAugment

    views = MultiView(RandomDigitAugment(), 3)(torch.rand(1, 8, 8))
    assert views.shape == (3, 1, 8, 8)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    with pytest.raises(ValueError, match="views"):
        MultiView(RandomDigitAugment(), 0)


def test_an_encoders_normalisation_replaces_the_datasets_and_fits_grey_images() -> None:
    from invprop.data import InputNeeds

    rgb = ((0.5, 0.25, 0.75), (0.2, 0.3, 0.4))
    splits = build_datasets("digits", needs=InputNeeds(normalization=rgb))
    assert splits.mean == (0.5,) and splits.std == pytest.approx((0.3,))  # one channel: the mean of the three
    own = build_datasets("digits")
    image = splits.train_plain[0][1]
    assert torch.allclose(image * 0.3 + 0.5, own.train_plain[0][1] * own.std[0] + own.mean[0], atol=1e-5)
