from __future__ import annotations

import json
from pathlib import Path

import pytest

from invprop.cli import main
from invprop.evaluation.ablation import ablation_of, parse_variants
from invprop.methods.classification.instance_classifier import ABLATION as CLASSIFIER_ABLATION
from invprop.methods.memory_bank.invp import ABLATION

VARIANTS = ABLATION.variants


def test_two_epoch_ablation_on_digits_writes_every_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ablate"
    args = ["-q", "ablate", "--epochs", "2", "--set", "loss.rampup_epochs=1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    rows = {row["variant"]: row for row in results["variants"]}
    assert list(rows) == list(VARIANTS)
    assert results["epochs"] == 2 and results["command"].startswith("invprop -q ablate")
    for name, row in rows.items():
        assert 0 < row["knn_top1"] <= 1, name
        assert row["epochs"] == 2 and row["seconds"] > 0
        assert f"| {name} |" in printed and f"| {name} |" in (out / "results.md").read_text()
    assert rows["insdis"]["method"] == "insdis" and rows["insdis"]["purity_positive"] is None
    for name in ("invp", "invp-concat", "knn-positives"):
        assert 0 <= rows[name]["purity_positive"] <= 1
    # Same seed and data order: during the ramp-up (epoch 1, binary w = 0) every variant with the same instance term
    # trains identically, and the variants that change it do not.
    first = {name: json.loads((out / name / "history.jsonl").read_text().splitlines()[0]) for name in VARIANTS}
    same = ("invp-no-hard-positives", "invp-concat", "knn-positives", "insdis-hard")
    assert all(first[name]["loss_ins"] == first["invp"]["loss_ins"] for name in same)
    assert first["invp-no-hard-negatives"]["loss_ins"] != first["invp"]["loss_ins"]


def test_ablation_resumes_variant_by_variant(tmp_path: Path) -> None:
    out = tmp_path / "ablate"
    common = ["-q", "ablate", "--epochs", "2", "--out", str(out)]
    assert main([*common, "--variants", "insdis"]) == 0
    first = json.loads((out / "insdis" / "metrics.json").read_text())
    # An interrupted second variant: one epoch done, then the ablation is run again.
    assert (
        main(
            [
                "-q",
                "train",
                "--epochs",
                "2",
                "--stop-after",
                "1",
                "--set",
                "method=insdis-hard",
                "--out",
                str(out / "insdis-hard"),
            ]
        )
        == 0
    )
    assert main([*common, "--variants", "insdis,insdis-hard"]) == 0
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["variants"]}
    assert rows["insdis"]["seconds"] == first["seconds"]  # reused, not retrained
    assert rows["insdis-hard"]["epochs"] == 2
    history = (out / "insdis-hard" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]  # resumed, not restarted


def test_ablation_refuses_a_changed_config_and_bad_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ablate"
    assert main(["-q", "ablate", "--epochs", "1", "--variants", "insdis", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["-q", "ablate", "--epochs", "1", "--variants", "insdis", "--set", "seed=3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "seed" in err and err.count("\n") == 1
    assert main(["-q", "ablate", "--variants", "invp,insdiss", "--out", str(out)]) == 2
    assert "did you mean insdis?" in capsys.readouterr().err


def test_parse_variants() -> None:
    assert parse_variants(None) == list(VARIANTS) == parse_variants("all")
    assert parse_variants(" invp , insdis ") == ["invp", "insdis"]
    with pytest.raises(Exception, match="twice"):
        parse_variants("invp,invp")


def test_classifier_ablation_is_its_own_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from invprop.config import preset
    from invprop.evaluation.ablation import variant_config

    names = parse_variants(None, "instance-classifier")
    assert names == list(CLASSIFIER_ABLATION.variants) and len(names) == 5
    assert ablation_of("instance-classifier") is CLASSIFIER_ABLATION
    settings = {name: variant_config(preset("digits"), "instance-classifier", name) for name in names}
    assert all(cfg.method == "instance-classifier" for cfg in settings.values())
    assert [(c.model.head, c.classifier.prior, c.classifier.smoothing > 0) for c in settings.values()] == [
        ("linear", True, True), ("mlp_bn", False, False), ("mlp_bn", True, False), ("mlp_bn", False, True), ("mlp_bn", True, True)
    ]  # fmt: skip
    with pytest.raises(Exception, match="unknown variant 'invp' of instance-classifier"):
        parse_variants("invp", "instance-classifier")
    out = tmp_path / "ablate"
    args = ["-q", "ablate", "--method", "instance-classifier", "--variants", "classifier,classifier-prior-smoothing",
            "--epochs", "1", "--set", "classifier.hard_classes=10", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["variants"]}
    assert set(rows) == {"classifier", "classifier-prior-smoothing"}
    assert all(0 < r["knn_top1"] <= 1 and r["method"] == "instance-classifier" for r in rows.values())
    assert "| classifier-prior-smoothing |" in capsys.readouterr().out


def test_paper_setting_is_the_tables_own_and_set_still_wins(tmp_path: Path) -> None:
    from invprop.config import load_yaml

    out = tmp_path / "ablate"
    args = ["-q", "ablate", "--paper", "--variants", "invp,invp-paper-background", "--epochs", "1",
            "--set", "loss.rampup_epochs=0", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    for name in ("invp", "invp-paper-background"):
        saved = load_yaml(out / name / "config.yaml")
        assert (saved["model"]["head"], saved["loss"]["temperature"], saved["loss"]["rampup_epochs"]) == (
            "linear",
            0.07,
            0,
        )
    assert load_yaml(out / "invp-paper-background" / "config.yaml")["loss"]["background"] == "paper"
    header = json.loads((out / "results.json").read_text())["base_config"]
    assert header["model"]["head"] == "linear"
    with_set = tmp_path / "with-set"
    assert main(["-q", "ablate", "--paper", "--variants", "invp", "--epochs", "1", "--set", "loss.temperature=0.1",
                 "--out", str(with_set)]) == 0  # fmt: skip
    assert load_yaml(with_set / "invp" / "config.yaml")["loss"]["temperature"] == 0.1
