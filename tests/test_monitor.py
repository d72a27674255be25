"""The per-epoch monitor: RankMe of the held-out embeddings, labelled or not, and the warning when they collapse."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import invprop.engine.trainer as trainer_module
from digit_folder import write_digit_folder
from invprop.cli import main
from invprop.core.label_free import COLLAPSED_RANK
from invprop.engine.monitor import Extracted, collapse_warning, rank_scores


def extracted(embeddings: torch.Tensor, features: torch.Tensor) -> Extracted:
    return Extracted(embeddings, features, torch.full((embeddings.shape[0],), -1))


def test_rank_scores_fall_towards_one_for_collapsed_embeddings_and_warn() -> None:
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(200, 16, generator=g)
    direction = torch.randn(1, 16, generator=g)
    collapsed = direction + 1e-4 * torch.randn(200, 16, generator=g)  # one direction, a little noise
    healthy = rank_scores(extracted(spread, spread))
    fallen = rank_scores(extracted(collapsed, spread))
    assert healthy["rankme"] > 12 and fallen["rankme"] < 1.1
    assert fallen["rankme_backbone"] == healthy["rankme_backbone"]  # each score reads its own tensor
    assert collapse_warning({"epoch": 3, **healthy}) is None
    warning = collapse_warning({"epoch": 3, **fallen})
    assert warning is not None and warning.startswith("epoch 3: the held-out embeddings have collapsed")
    assert collapse_warning({"epoch": 3, "rankme": COLLAPSED_RANK}) is None  # the threshold itself is no collapse
    assert collapse_warning({"epoch": 3, "loss": 1.0}) is None  # nothing measured, nothing said


def test_an_unlabelled_folder_records_rankme_each_epoch_and_warns_on_collapse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_digit_folder(tmp_path / "digits", 200)
    run = tmp_path / "run"
    small = ["--set", "model.backbone=small_convnet", "--set", "data.image_size=16", "--set", "optim.batch_size=50"]
    args = ["-q", "train", "--dataset", f"imagefolder:{tmp_path / 'digits'}", "--set", "method=simclr", *small,
            "--epochs", "2", "--out", str(run)]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [("rankme" in r, "rankme_backbone" in r, "knn_top1" in r) for r in records] == [(True, True, False)] * 2
    assert all(1 <= r["rankme"] <= 128 for r in records)
    assert json.loads((run / "metrics.json").read_text())["rankme"] == records[-1]["rankme"]
    # a run whose held-out embeddings collapse (the monitor's reading replaced by a collapsed one) says so each epoch
    monkeypatch.setattr(trainer_module, "rank_monitor", lambda *a, **k: {"rankme": 1.01, "rankme_backbone": 1.5})
    with caplog.at_level(logging.WARNING, logger="invprop.engine.monitor"):
        assert main([*args[:-1], str(tmp_path / "collapsed")]) == 0
    said = [r.getMessage() for r in caplog.records if "have collapsed (RankMe 1.01" in r.getMessage()]
    assert [message.split(":")[0] for message in said] == ["epoch 1", "epoch 2"]
