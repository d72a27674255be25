from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invprop.cli import main


def test_embed_writes_normalised_embeddings_with_labels(digits_run: Path, tmp_path: Path) -> None:
    assert main(["-q", "embed", "--checkpoint", str(digits_run), "--split", "test", "--out", str(tmp_path / "e")]) == 0
    data = np.load(tmp_path / "e.npz")
    assert data["embeddings"].shape == (450, 128) and data["features"].shape == (450, 256)
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, rtol=1e-5)
    assert data["labels"].shape == (450,) and set(data["labels"].tolist()) == set(range(10))
    assert (data["indices"] == np.arange(450)).all()


def test_neighbors_by_index_exclude_the_query_and_are_sorted(
    digits_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from invprop.evaluation.embed import nearest_neighbors

    rows = nearest_neighbors(digits_run, "7", k=5)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["index"] != 7 for r in rows)
    sims = [r["similarity"] for r in rows]
    assert sims == sorted(sims, reverse=True)
    assert main(["-q", "neighbors", "--checkpoint", str(digits_run), "--query", "7", "-k", "3"]) == 0
    assert capsys.readouterr().out.count("similarity") == 3


def test_neighbors_of_an_image_file_find_its_own_copy(digits_run: Path, tmp_path: Path) -> None:
    from invprop.data import build_datasets
    from invprop.evaluation.embed import nearest_neighbors

    image = build_datasets("digits").train.source[42][0]  # (1, 8, 8) in [0, 1]
    path = tmp_path / "query.png"
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8), mode="L").save(path)
    rows = nearest_neighbors(digits_run, str(path), k=1)
    assert rows[0]["index"] == 42 and rows[0]["similarity"] > 0.99


def test_bad_queries_are_one_line_errors(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for query in ("99999", "no-such-file.png"):
        assert main(["-q", "neighbors", "--checkpoint", str(digits_run), "--query", query]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_eval_linear_on_a_run_and_the_untrained_baseline(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "eval", "linear", "--checkpoint", str(digits_run)]) == 0
    assert "linear_top1" in capsys.readouterr().out
    assert main(["-q", "eval", "linear", "--untrained"]) == 0
    assert "checkpoint: untrained" in capsys.readouterr().out
    assert main(["-q", "eval", "linear"]) == 2
    assert "--untrained" in capsys.readouterr().err
    import json

    evals = json.loads((digits_run / "metrics.json").read_text())["eval"]
    assert evals[-1]["protocol"] == "linear" and 0 <= evals[-1]["linear_top1"] <= evals[-1]["linear_top5"] <= 1


def test_neighbors_render_a_png(digits_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "strip.png"
    assert (
        main(["-q", "neighbors", "--checkpoint", str(digits_run), "--query", "3", "-k", "4", "--render", str(out)]) == 0
    )
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > img.height  # a strip of 5 pictures
