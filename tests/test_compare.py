"""invprop compare: each method with its own defaults on one budget, a ranked table, rows reused, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invprop.cli import main
from invprop.errors import ConfigError
from invprop.evaluation.compare import MEASURES_NAME, method_config, parse_methods


def test_methods_are_checked_before_any_work() -> None:
    assert parse_methods("invp, simclr") == ["invp", "simclr"]
    with pytest.raises(ConfigError, match="unknown method 'simclrr' \\(did you mean simclr\\?\\)"):
        parse_methods("invp,simclrr")
    with pytest.raises(ConfigError, match="twice"):
        parse_methods("byol,byol")


def test_each_method_takes_the_shared_keys_and_only_its_own_sections() -> None:
    shared = {"epochs": 3, "optim": {"lr": 0.1}, "loss": {"rampup_epochs": 2}, "moco": {"queue_size": 64}}
    simclr = method_config("digits", "simclr", shared, {})
    assert simclr.epochs == 3 and simclr.optim.lr == 0.1 and simclr.model.head == "mlp_bn"
    assert not hasattr(simclr, "loss") and not hasattr(simclr, "moco")
    assert method_config("digits", "invp", shared, {}).loss.rampup_epochs == 2
    moco = method_config("digits", "moco", shared, {"moco": {"temperature": 0.5}})
    assert moco.moco.queue_size == 64 and moco.moco.temperature == 0.5 and moco.model.head == "mlp"  # its preset
    with pytest.raises(ConfigError, match="unknown setting optim.lrr"):
        method_config("digits", "simclr", {"optim": {"lrr": 1}}, {})


@pytest.mark.slow
def test_compare_trains_ranks_reuses_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    args = ["-q", "compare", "--methods", "simclr,vicreg", "--epochs", "1", "--set", "optim.batch_size=64",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| 1 | " in printed and "| 2 | " in printed and "(2 methods)" in printed
    payload = json.loads((out / "results.json").read_text())
    assert payload["kind"] == "compare" and [r["method"] for r in payload["rows"]] == ["simclr", "vicreg"]
    for row in payload["rows"]:
        assert row["epochs"] == 1 and 0 < row["knn_top1"] <= 1 and 0 < row["linear_top1"] <= 1
        assert 0 < row["untrained_knn_top1"] <= 1 and 0 < row["untrained_knn_backbone_top1"] <= 1
        assert 0 < row["knn_backbone_top1"] <= 1 and row["seconds_per_epoch"] > 0 and row["images_per_second"] > 0
        assert row["peak_memory_bytes"] is None or row["peak_memory_bytes"] > 0
        assert payload["configs"][row["method"]]["optim"]["batch_size"] == 64
    checkpoints = {m: (out / m / "last.pt").stat().st_mtime_ns for m in ("simclr", "vicreg")}
    measures = (out / "simclr" / MEASURES_NAME).read_bytes()
    assert main(args) == 0  # the second time every row is reused
    assert {m: (out / m / "last.pt").stat().st_mtime_ns for m in checkpoints} == checkpoints
    assert (out / "simclr" / MEASURES_NAME).read_bytes() == measures
    assert main(["-q", "report", str(out), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert f"compare: {out}" in page and "<td>simclr</td>" in page and "<td>vicreg</td>" in page
    # Each method's own curves, from its spec: VICReg's three terms in one figure, SimCLR's NT-Xent in another.
    import html

    from invprop.evaluation.report import curve_filename
    from invprop.methods import METHODS

    (vicreg_terms,) = METHODS.get("vicreg").curves
    assert vicreg_terms.keys == ("loss_invariance", "loss_variance", "loss_covariance")
    for curve in (vicreg_terms, *METHODS.get("simclr").curves):
        assert (tmp_path / "report" / curve_filename(curve)).is_file() and f"alt='{html.escape(curve.title)}'" in page


def test_the_default_methods_run_on_grayscale_images() -> None:
    from invprop.methods import METHODS

    names = parse_methods(None)
    assert {"invp", "insdis", "simclr", "swav"} <= set(names)
    assert not [n for n in names if METHODS.get(n).colour_only]  # a default compare of digits must not refuse


def test_a_method_that_diverges_is_reported_and_the_others_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "simclr,insdis", "--epochs", "1", "--set", "simclr.temperature=1.0e-30",
            "--no-linear", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["simclr"]["diverged"].startswith("diverged at epoch 1, step ") and rows["simclr"]["knn_top1"] is None
    assert 0 < rows["simclr"]["untrained_knn_top1"] <= 1  # the floor is still measured
    assert 0 < rows["insdis"]["knn_top1"] <= 1  # the method after it ran
    table = (out / "results.md").read_text()
    assert "| 2 | simclr | diverged at epoch 1, step " in table and "| 1 | insdis | " in table
    assert "compare, method simclr: non-finite loss" in caplog.text and "Traceback" not in captured.err
    assert "no checkpoint yet" in caplog.text  # it diverged before the first epoch ended
    assert main(["-q", "report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "<td>diverged at epoch 1, step " in (tmp_path / "report" / "report.html").read_text()
