from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invprop.cli import main
from invprop.evaluation.finetune import balanced_subset


def test_balanced_subset_is_class_balanced_and_reproducible() -> None:
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    a = balanced_subset(labels, 0.01)
    assert torch.equal(a, balanced_subset(labels, 0.01))
    assert Counter(labels[a].tolist()) == {0: 3, 1: 3, 2: 3}  # round(1000 * 1% / 3) = 3 per class
    b = balanced_subset(labels, 0.10)
    assert Counter(labels[b].tolist()) == {0: 33, 1: 33, 2: 33}
    assert len(set(b.tolist())) == 99 and torch.equal(b, b.sort().values)
    assert not torch.equal(balanced_subset(labels, 0.10, seed=1), b)
    tiny = balanced_subset(torch.tensor([0, 0, 1]), 0.01)
    assert sorted(torch.tensor([0, 0, 1])[tiny].tolist()) == [0, 1]  # at least one per class


def test_semi_reports_pretrained_and_scratch_and_saves_subsets(
    digits_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "eval", "semi", "--checkpoint", str(digits_run), "--set", "eval.finetune_epochs=1"]) == 0
    out = capsys.readouterr().out
    for key in ("semi_1pct_top1", "semi_1pct_scratch_top1", "semi_10pct_top1", "semi_10pct_scratch_top5"):
        assert key in out
    saved = json.loads((digits_run / "semi-subsets.json").read_text())
    assert len(saved["subsets"]["semi_1pct"]) == 10 and len(saved["subsets"]["semi_10pct"]) == 130
    result = json.loads((digits_run / "metrics.json").read_text())["eval"][-1]
    assert result["protocol"] == "semi" and 0 <= result["semi_10pct_top1"] <= result["semi_10pct_top5"] <= 1


def _colour_folder(root: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", 8), ("test", 4)):
        for cls, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                noise = rng.integers(-20, 20, (8, 8, 3))
                Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")


def test_transfer_to_another_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _colour_folder(tmp_path / "source", 0)
    _colour_folder(tmp_path / "target", 1)
    run = tmp_path / "run"
    common = ["--set", "model.backbone=small_convnet", "--set", "data.image_size=8", "--set", "optim.batch_size=4",
              "--set", "bank.num_neighbors=2", "--set", "loss.n_background=8", "--set", "eval.knn_k=4"]  # fmt: skip
    assert (
        main(
            [
                "-q",
                "train",
                "--dataset",
                f"imagefolder:{tmp_path / 'source'}",
                "--epochs",
                "1",
                *common,
                "--out",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    target = f"imagefolder:{tmp_path / 'target'}"
    assert (
        main(
            ["-q", "eval", "transfer", "--checkpoint", str(run), "--dataset", target, "--set", "eval.finetune_epochs=2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    for key in ("linear_top1", "finetune_top1", "scratch_top1"):
        assert key in out
    assert main(["-q", "eval", "transfer", "--checkpoint", str(run)]) == 2  # needs --dataset


def test_semi_from_the_heads_first_layer_says_so_and_refuses_a_layer_the_head_lacks(
    digits_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-q", "eval", "semi", "--checkpoint", str(digits_run), "--set", "eval.finetune_epochs=1"]
    assert main([*args, "--from-head-layer", "1"]) == 0
    result = json.loads((digits_run / "metrics.json").read_text())["eval"][-1]
    assert result["protocol"] == "semi" and result["from_head_layer"] == 1
    assert 0 <= result["semi_10pct_top1"] <= 1
    capsys.readouterr()
    assert main([*args, "--from-head-layer", "3"]) == 2  # digits' mlp_bn head has two layers
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.from_head_layer=3, but the head has 2 layer(s)" in err[0]


@pytest.mark.parametrize("task", ["rotation", "exemplar"])
def test_semi_with_s4l_adds_its_row_beside_fine_tuning_and_scratch(
    digits_run: Path, capsys: pytest.CaptureFixture[str], task: str
) -> None:
    argv = ["-q", "eval", "semi", "--checkpoint", str(digits_run), "--set", "eval.finetune_epochs=1", "--s4l", task]
    assert main([*argv, "--set", "eval.s4l_views=2"]) == 0
    result = json.loads((digits_run / "metrics.json").read_text())["eval"][-1]
    for fraction in ("1pct", "10pct"):
        assert 0 <= result[f"semi_{fraction}_s4l_{task}_top1"] <= result[f"semi_{fraction}_s4l_{task}_top5"] <= 1
        assert f"semi_{fraction}_scratch_top1" in result


def test_an_unknown_s4l_task_is_one_line(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "eval", "semi", "--checkpoint", str(digits_run), "--s4l", "rotaton"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.s4l=rotaton (did you mean rotation?)" in err[0]
