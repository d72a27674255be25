from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from invprop.cli import main
from invprop.evaluation.report import histogram_overlap, neighbor_similarities


def test_neighbor_similarities_pick_the_nearest_of_each_kind() -> None:
    emb = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0], [0.1, 0.9], [0.3, 0.8]]), dim=1
    )
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    same, different = neighbor_similarities(emb, labels, k=2)
    sims = emb @ emb.T
    assert same.shape == (6, 2) and different.shape == (6, 2)
    torch.testing.assert_close(same[0], torch.stack([sims[0, 1], sims[0, 2]]))
    torch.testing.assert_close(different[0], torch.stack([sims[0, 5], sims[0, 4]]))


def test_histogram_overlap_bounds() -> None:
    a = torch.full((100,), 0.9)
    assert histogram_overlap(a, a) == pytest.approx(1.0)
    assert histogram_overlap(a, torch.full((100,), -0.9)) == 0.0


@pytest.fixture(scope="module")
def report_dir(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["-q", "report", str(digits_run), "--out", str(out)]) == 0
    return out


def test_report_embeds_every_figure(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    pngs = sorted(report_dir.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"curves-loss.png", "curves-knn.png", "curves-purity.png", "similarities.png", "tsne.png"} <= names
    assert any(n.startswith("positives-") for n in names)
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    assert "http://" not in page and "https://" not in page  # self-contained: opens offline


def test_report_renders_in_a_headless_browser(report_dir: Path, tmp_path: Path) -> None:
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser installed")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}", (report_dir / "report.html").as_uri()],
                   check=True, timeout=60, capture_output=True)  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_report_rejects_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
