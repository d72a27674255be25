from __future__ import annotations

import base64
import html
import json
import os
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


def test_report_embeds_every_figure(report_dir: Path, digits_run: Path) -> None:
    from invprop.evaluation.report import SHARED_CURVES, curve_filename
    from invprop.methods import METHODS

    page = (report_dir / "report.html").read_text()
    pngs = sorted(report_dir.glob("*.png"))
    names = {p.name for p in pngs}
    logged = {key for line in (digits_run / "history.jsonl").read_text().splitlines() for key in json.loads(line)}
    shown = [c for c in (*SHARED_CURVES, *METHODS.get("invp").curves) if logged & set(c.keys)]  # what the run logs
    curves = {curve_filename(c) for c in shown}
    assert curves | {"similarities.png", "tsne.png"} <= names
    assert len(curves) == 5 and any(n.startswith("positives-") for n in names)  # InvP's figure of its positives
    assert {n for n in names if n.startswith(("neighbours-", "map-"))} == {"neighbours-digits.png", "map-digits.png"}
    assert "<div class='group'>" in page and "nearest neighbours: digits" in page
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    assert "http://" not in page and "https://" not in page  # self-contained: opens offline


#: Set by .ci/run, which installs Chromium: there a missing browser fails the test instead of skipping it.
REQUIRE_BROWSER = "INVPROP_REQUIRE_BROWSER"
#: Appended to a copy of the page: after loading, the browser writes what it saw into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
                                                   width: i.naturalWidth}));
  const fetched = performance.getEntriesByType('resource').map(e => e.name);
  const links = [...document.querySelectorAll('[src],[href]')]
    .map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => !u.startsWith('data:') && !u.startsWith('#'));
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({images, fetched, links});
  document.body.appendChild(probe);
});
</script>"""


def _browser() -> str:
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(f"no headless browser installed, and {REQUIRE_BROWSER} is set (.ci/run installs chromium)")
        pytest.skip("no headless browser installed")
    return browser


def _headless(browser: str, *args: str) -> str:
    flags = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--virtual-time-budget=5000"]
    done = subprocess.run([browser, *flags, *args], check=True, timeout=120, capture_output=True, text=True)
    return done.stdout


def test_report_renders_in_a_headless_browser(report_dir: Path, tmp_path: Path) -> None:
    browser = _browser()
    page = (report_dir / "report.html").read_text()
    probed = tmp_path / "probed.html"  # a copy outside the report folder: nothing beside it to load by accident
    probed.write_text(page.replace("</body>", PROBE + "</body>") if "</body>" in page else page + PROBE)
    dom = _headless(browser, "--dump-dom", probed.as_uri())
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S)
    assert found, "the page did not finish loading"
    seen = json.loads(html.unescape(found.group(1)))
    figures = page.count("<img ")
    assert figures >= 6 and len(seen["images"]) == figures
    assert all(image["loaded"] and image["width"] > 100 for image in seen["images"]), seen["images"]
    drawn = {image["alt"] for image in seen["images"]}
    assert {
        "nearest neighbours: digits",
        "map with thumbnails: digits",
    } <= drawn  # the pictures, as the browser saw them
    assert seen["fetched"] == [] and seen["links"] == []  # every figure is inside the page: nothing is fetched
    shot = tmp_path / "shot.png"
    _headless(browser, "--window-size=1280,2400", f"--screenshot={shot}", (report_dir / "report.html").as_uri())
    from PIL import Image

    with Image.open(shot) as picture:
        colours = picture.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # figures were drawn, not a blank page


def test_report_rejects_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_figure_titles_do_not_overlap_the_panel_titles() -> None:
    from invprop.evaluation.report import curves_plot

    history = [{"epoch": e, "purity_positive": 0.5, "purity_hard_positive": 0.4, "background_same_label": 0.1}
               for e in (1, 2, 3)]  # fmt: skip
    keys = ("purity_positive", "purity_hard_positive", "background_same_label")
    fig = curves_plot({"run": history}, keys, "positive purity", "purity")
    assert fig is not None
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig.get_suptitle()
    assert title == "positive purity"
    top = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert not top.overlaps(ax.title.get_window_extent(renderer)), ax.get_title()
