"""The exact-resume check the method tests share: a run stopped after epoch 1 and resumed ends where an
uninterrupted run does (metrics and every saved tensor)."""

from __future__ import annotations

from pathlib import Path

import torch

from invprop.config import Config
from invprop.engine import Trainer, load_checkpoint


def assert_resumes_exactly(cfg: Config, folder: Path) -> dict[str, torch.Tensor]:
    """Train ``cfg`` whole and with a stop after epoch 1; assert equal metrics and states; return the state."""
    full = Trainer(cfg, folder / "full", progress=False).fit().metrics
    Trainer(cfg, folder / "cut", progress=False).fit(stop_after=1)
    resumed = Trainer(cfg, folder / "cut", progress=False).fit(resume=True).metrics
    assert resumed["loss"] == full["loss"] and resumed.get("knn_top1") == full.get("knn_top1")
    a = load_checkpoint(folder / "full" / "last.pt")["model"]
    b = load_checkpoint(folder / "cut" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a
