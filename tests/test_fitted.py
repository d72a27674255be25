"""invprop.config.fitted: a folder's settings follow its images and the machine, by a rule; the user's win."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invprop.cli import main
from invprop.config import fitted
from invprop.config.fitted import FolderFacts, MachineFacts, fitted_choices, fitted_for, folder_facts

LAPTOP = MachineFacts(cuda=False, cores=2)
WORKSTATION = MachineFacts(cuda=False, cores=16)
GPU = MachineFacts(cuda=True, cores=16)


def _values(facts: FolderFacts, machine: MachineFacts) -> dict[str, object]:
    return {c.key: c.value for c in fitted_choices(facts, machine)}


def test_the_side_follows_the_images_never_enlarged_and_capped_by_the_device() -> None:
    assert _values(FolderFacts(600, 40, 256), LAPTOP)["data.image_size"] == 32
    assert _values(FolderFacts(600, 20, 256), LAPTOP)["data.image_size"] == 16  # 20 px: never enlarged to 24
    assert _values(FolderFacts(600, 100, 256), WORKSTATION)["data.image_size"] == 64
    assert _values(FolderFacts(600, 3024, 256), GPU)["data.image_size"] == 224
    assert _values(FolderFacts(600, 100, 256), GPU)["data.image_size"] == 96


def test_the_network_augmentation_batch_and_workers_follow_the_side_and_the_machine() -> None:
    cpu = _values(FolderFacts(2000, 500, 256), LAPTOP)
    assert cpu["model.backbone"] == "small_convnet" and cpu["data.augment"] == "cifar"
    assert cpu["optim.batch_size"] == 128 and cpu["data.num_workers"] == 0  # decoded into memory
    small_gpu = _values(FolderFacts(2000, 32, 256), GPU)
    assert small_gpu["model.backbone"] == "resnet18_cifar" and small_gpu["optim.batch_size"] == 256
    large_gpu = _values(FolderFacts(2000, 500, 256), GPU)
    assert large_gpu["model.backbone"] == "resnet18" and large_gpu["data.augment"] == "imagenet"
    huge = _values(FolderFacts(2_000_000, 500, 256), GPU)  # 300 GB decoded: read per image
    assert huge["data.num_workers"] == 8


def test_folder_facts_read_headers_and_the_users_keys_are_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (w, h) in enumerate([(100, 60), (30, 90), (500, 400)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    facts = folder_facts(folder)
    assert facts.images == 3 and facts.shorter_side == 60 and facts.sampled == 3
    values, note = fitted_for(f"imagefolder:{folder}", {"data": {"image_size": 48}, "model": {"backbone": "resnet18"}})
    assert "image_size" not in values["data"] and "model" not in values
    assert note is not None and "data.augment=" in note and "data.image_size" not in note
    assert fitted_for("cifar10", {}) == ({}, None)


def test_presets_of_a_folder_show_the_choice_without_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(folder / f"{i}.png")
    monkeypatch.setattr(fitted.MachineFacts, "here", staticmethod(lambda device="auto": LAPTOP))
    assert main(["presets", f"imagefolder:{folder}"]) == 0
    out = capsys.readouterr().out
    assert "median shorter side 50 px" in out and "#   model.backbone=small_convnet" in out
    assert "image_size: 32" in out and f"name: imagefolder:{folder}" in out
