"""The report's figures of what a trained method makes: rebuilt from the checkpoint, run on the report's query
images, the same rows at every report of a run, drawn one row per caption."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from invprop.config import from_dict, preset
from invprop.engine import Trainer, load_checkpoint
from invprop.evaluation.loading import load_eval_context
from invprop.evaluation.report_pictures import QUERIES
from invprop.evaluation.report_rows import method_rows, rows_figure


def test_a_trained_autoencoders_rows_come_from_its_checkpoint_and_repeat(tmp_path: Path) -> None:
    cfg = from_dict({"method": "denoising-ae", "epochs": 1, "data": {"subset": 300}, "eval": {"every": 5}},
                    base=preset("digits", "denoising-ae"))  # fmt: skip
    Trainer(cfg, tmp_path, progress=False).fit()
    ctx = load_eval_context(tmp_path, require_labels=False)
    state = load_checkpoint(tmp_path / "last.pt")["model"]
    (figure, rows), *others = method_rows(ctx, state)
    assert not others and figure.title == "reconstructions"
    assert [caption for caption, _ in rows] == ["input", "corrupted", "reconstruction"]
    clean, corrupted, made = (images for _, images in rows)
    assert clean.shape == (QUERIES, 1, 8, 8) and made.shape == clean.shape
    assert all(float(x.min()) >= 0 and float(x.max()) <= 1 for x in (clean, corrupted, made))
    destroyed = (corrupted == 0) & (clean > 0)
    assert destroyed.flatten(1).sum(dim=1).min() > 0  # the corruption is shown, not the clean image twice
    assert torch.equal(method_rows(ctx, state)[0][1][1][1], corrupted)  # the same corruptions at every report
    fig = rows_figure(rows, "reconstructions")
    assert len(fig.axes) == 3 * QUERIES
    plt.close(fig)


def test_a_method_without_image_rows_has_none(digits_run: Path) -> None:
    state = load_checkpoint(digits_run / "last.pt")["model"]
    assert method_rows(load_eval_context(digits_run, require_labels=False), state) == []
