"""invprop compare on a folder without labels: ranked by the default label-free criterion, or by a few labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digit_folder import write_digit_folder
from invprop.cli import main
from invprop.evaluation.compare_table import ranking_of
from invprop.evaluation.criteria import CRITERIA, DEFAULT_CRITERION

SMALL = ["--set", "model.backbone=small_convnet", "--set", "data.image_size=16", "--set", "optim.batch_size=64",
         "--epochs", "1", "--no-linear"]  # fmt: skip


@pytest.mark.slow
def test_an_unlabelled_folder_is_ranked_by_the_default_criterion_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_digit_folder(tmp_path / "digits", 300)
    out = tmp_path / "cmp"
    args = ["-q", "compare", "--dataset", f"imagefolder:{tmp_path / 'digits'}", "--methods", "simclr,byol", *SMALL,
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    page = capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    assert payload["ranked_by"] == DEFAULT_CRITERION
    assert f"Ranked without labels by {CRITERIA.get(DEFAULT_CRITERION).title}" in page
    scores = {row["method"]: row["label_free"][DEFAULT_CRITERION] for row in payload["rows"]}
    first = (
        max(scores, key=scores.get) if CRITERIA.get(DEFAULT_CRITERION).higher_is_better else min(scores, key=scores.get)
    )
    assert f"| 1 | {first} |" in page and all(row["knn_top1"] is None for row in payload["rows"])
    config = (out / "simclr" / "config.yaml").read_text()
    assert "holdout: 0.1" in config  # 30 of the 300 images were kept out of training and scored


def test_a_table_without_labels_or_scores_has_no_rank() -> None:
    rows = [{"method": m, "knn_top1": None, "label_free": None} for m in ("simclr", "byol")]
    ranking = ranking_of(rows)
    assert ranking.by is None and ranking.keys == [None, None] and ranking.note.startswith("Not ranked")


@pytest.mark.slow
def test_a_few_labels_fill_the_knn_and_linear_columns_from_those_images_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = write_digit_folder(tmp_path / "digits", 600)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{name},digit-{digit}\n" for name, digit in written[:100]))
    out = tmp_path / "cmp"
    args = ["-q", "compare", "--dataset", f"imagefolder:{tmp_path / 'digits'}", "--methods", "simclr", *SMALL,
            "--labels", str(labels), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    page = capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    row = payload["rows"][0]
    assert payload["ranked_by"] == "knn_top1" and payload["labels"]["images"] == 100 and payload["labels"]["folds"] == 5
    assert 0.1 < row["knn_top1"] <= 1 and 0.1 < row["linear_top1"] <= 1 and 0 < row["untrained_knn_top1"] <= 1
    assert "Ranked by kNN top-1 of the 100 labelled images" in page
    entry = json.loads((out / "simclr" / "compare.json").read_text())["labels"]
    assert entry["trained"]["labelled_images"] == 100
    # Other labels are scored again; a bad file is one line, exit 2.
    labels.write_text("".join(f"{name},{digit % 2}\n" for name, digit in written[:100]))
    assert main(args) == 0
    assert json.loads((out / "simclr" / "compare.json").read_text())["labels"]["key"] != entry["key"]
    labels.write_text("0000.png,a\n0001.png,b\nmissing.png,a\n")
    assert main(args) == 2
    assert "row 3: no image" in capsys.readouterr().err
