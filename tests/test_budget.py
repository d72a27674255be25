"""invprop.evaluation.budget: the equal-time comparison's probe and plan."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from invprop.cli import main
from invprop.config import Config
from invprop.errors import ConfigError
from invprop.evaluation import budget
from invprop.evaluation.budget import BUDGET_KEY, Probe, parse_budget, planned_epochs, probe
from invprop.evaluation.compare import MEASURES_NAME, method_config


def test_budgets_are_read_in_hours_minutes_and_seconds() -> None:
    assert parse_budget("1h30m") == 5400 and parse_budget(" 2m 30s ") == 150 and parse_budget("0.5h") == 1800
    for bad in ("20 minutes", "", "m", "0s", "-5"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)


def test_a_probe_divides_the_budget_into_epochs() -> None:
    measured = Probe(step_seconds=0.5, start_seconds=2.0, eval_seconds=4.0, batches=10, every=2)
    assert measured.epoch_seconds == pytest.approx(2.0 + 5.0 + 2.0)
    assert measured.epochs_for(90.0) == 10 and measured.epochs_for(89.9) == 9 and measured.epochs_for(1.0) == 1


def _tiny() -> Config:
    return method_config("digits", "simclr", {}, {"epochs": 1, "optim": {"batch_size": 64}})


def test_the_probe_times_batches_apart_from_the_epoch_start_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the probe's throwaway run goes
    measured = probe(_tiny())
    assert measured.batches == 22 and measured.every == 1  # 1,437 digits in batches of 64 (last one dropped or not)
    assert measured.step_seconds > 0 and measured.eval_seconds > 0 and measured.start_seconds >= 0
    assert not any(tmp_path.iterdir())


def test_a_saved_plan_for_the_same_budget_is_kept_and_another_budget_probes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []

    def fake_probe(cfg: object) -> Probe:
        calls.append(1.0)
        return Probe(step_seconds=1.0, start_seconds=0.0, eval_seconds=0.0, batches=10, every=1)

    monkeypatch.setattr(budget, "probe", fake_probe)
    path = tmp_path / MEASURES_NAME
    epochs, entry = planned_epochs(_tiny(), path, 95.0)
    assert epochs == 9 and entry["epoch_seconds"] == 10.0 and len(calls) == 1
    path.write_text(json.dumps({BUDGET_KEY: {**entry, "epochs": 7}}))  # what a first run (on another day) planned
    assert planned_epochs(_tiny(), path, 95.0)[0] == 7 and len(calls) == 1
    assert planned_epochs(_tiny(), path, 200.0)[0] == 20 and len(calls) == 2


def test_budget_compare_plans_each_method_keeps_the_plan_and_refuses_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    args = ["-q", "compare", "--dataset", "digits", "--methods", "simclr,byol", "--budget", "3s", "--no-linear",
            "--set", "optim.batch_size=128", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["budget_seconds"] == 3.0 and payload["epochs"] is None
    for row in payload["rows"]:
        plan = row["budget"]
        assert plan["seconds"] == 3.0 and row["epochs"] == plan["epochs"] >= 1
        assert plan["epochs"] == max(1, int(3.0 // plan["epoch_seconds"]))
        assert payload["configs"][row["method"]]["epochs"] == row["epochs"]
    assert "3 s of training each" in capsys.readouterr().out

    def no_probe(cfg: object) -> Probe:
        raise AssertionError("a resumed budget compare must keep its plans")

    monkeypatch.setattr(budget, "probe", no_probe)
    checkpoint = (out / "byol" / "last.pt").stat().st_mtime_ns
    assert main(args) == 0  # reused: same plans, nothing trained
    assert (out / "byol" / "last.pt").stat().st_mtime_ns == checkpoint
    assert main([*args, "--epochs", "2"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    in_seconds = [a if a != "3s" else "3" for a in args]
    in_seconds[in_seconds.index("--budget")] = "--budget-seconds"
    assert main(in_seconds) == 0  # the same budget: the same plans, reused
