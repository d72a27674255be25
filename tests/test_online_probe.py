"""The online linear probe (``eval.online_probe``): logged per epoch, scored against an oracle written per test image,
resumed exactly, and without effect on what the method trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from digit_folder import write_digit_folder
from invprop.cli import main
from invprop.engine import load_checkpoint
from invprop.engine.monitor import extract
from invprop.engine.online_probe import NO_LABEL, OnlineProbe
from invprop.evaluation.loading import load_eval_context

TRAIN = ["-q", "train", "--epochs", "2", "--set", "loss.rampup_epochs=1", "--set", "optim.batch_size=64"]
PROBE = ["--set", "eval.online_probe=true"]
KEYS = ("online_probe_loss", "online_probe_train_top1", "online_probe_top1")


def _history(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two digits epochs with the probe, stopped after the first and resumed."""
    run = tmp_path_factory.mktemp("probed") / "run"
    assert main([*TRAIN, *PROBE, "--stop-after", "1", "--out", str(run)]) == 0
    assert main([*TRAIN, *PROBE, "--resume", "--out", str(run)]) == 0
    return run


def test_the_probe_is_logged_every_epoch_and_scored_on_the_held_out_split(probed: Path) -> None:
    lines = _history(probed)
    assert [line["epoch"] for line in lines] == [1, 2]
    for line in lines:
        assert all(key in line for key in KEYS), line
        assert 0.0 <= line["online_probe_train_top1"] <= 1.0 and line["online_probe_loss"] > 0
    assert lines[-1]["online_probe_top1"] > 0.5  # ten classes: chance is 0.1
    metrics = json.loads((probed / "metrics.json").read_text())
    assert metrics["online_probe_top1"] == lines[-1]["online_probe_top1"]


def test_the_held_out_score_equals_an_oracle_per_test_image(probed: Path) -> None:
    ctx = load_eval_context(probed)
    assert ctx.splits.test is not None
    held = extract(ctx.encoder, ctx.splits.test, ctx.device)
    state = load_checkpoint(probed / "last.pt")["online_probe"]["module"]
    weight, bias = state["linear.weight"], state["linear.bias"]
    right = 0
    for features, label in zip(held.features, held.labels):
        scores = [float(weight[c] @ features + bias[c]) for c in range(weight.shape[0])]
        right += int(max(range(len(scores)), key=scores.__getitem__) == int(label))
    assert _history(probed)[-1]["online_probe_top1"] == pytest.approx(right / len(held.labels), abs=1e-9)


def test_a_resumed_probe_equals_an_uninterrupted_one_and_the_method_trains_as_without_it(
    probed: Path, tmp_path: Path
) -> None:
    straight = tmp_path / "straight"
    assert main([*TRAIN, *PROBE, "--out", str(straight)]) == 0
    without = tmp_path / "without"
    assert main([*TRAIN, "--out", str(without)]) == 0
    resumed, whole, plain = (load_checkpoint(run / "last.pt") for run in (probed, straight, without))
    for key, value in whole["online_probe"]["module"].items():
        assert torch.equal(resumed["online_probe"]["module"][key], value), key
    for line_a, line_b in zip(_history(probed), _history(straight)):
        assert all(line_a[key] == line_b[key] for key in KEYS)
    assert "online_probe" not in plain and all(key not in _history(without)[-1] for key in KEYS)
    for key, value in plain["model"].items():  # no gradients, eval mode, no draws: the method's weights are the same
        assert torch.equal(whole["model"][key], value), key


def test_the_probe_step_leaves_out_images_without_a_label() -> None:
    torch.manual_seed(0)
    probe = OnlineProbe(4, 3, lr=0.5)
    features = torch.randn(6, 4)
    labels = torch.tensor([0, 1, NO_LABEL, 2, NO_LABEL, 1])
    logits = probe.linear(features)
    known = labels != NO_LABEL
    expected = torch.nn.functional.cross_entropy(logits[known], labels[known], reduction="sum")
    probe.step(features, labels)
    scores = probe.epoch_scores()
    assert scores["online_probe_loss"] == pytest.approx(float(expected) / 4, rel=1e-6)
    correct = int((logits.argmax(1)[known] == labels[known]).sum())
    assert scores["online_probe_train_top1"] == correct / 4
    assert probe.epoch_scores() == {}  # read and reset


def test_the_probe_refuses_an_unlabelled_folder_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_digit_folder(tmp_path / "digits", 100)
    run = tmp_path / "run"
    args = [*TRAIN, *PROBE, "--set", f"data.name=imagefolder:{tmp_path / 'digits'}", "--out", str(run)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval.online_probe needs labelled data" in err
    assert not (run / "last.pt").exists()
    shutil.rmtree(run, ignore_errors=True)
    classes = tmp_path / "classes"  # class folders but no test/: labels without a held-out split
    for name, digit in write_digit_folder(tmp_path / "flat", 100):
        (classes / str(digit)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "flat" / name).rename(classes / str(digit) / name)
    assert main([*TRAIN, *PROBE, "--set", f"data.name=imagefolder:{classes}", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval.online_probe needs labelled data" in err
