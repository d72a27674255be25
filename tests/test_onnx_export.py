"""``invprop export --format onnx``: a trained digits run's encoder as an ONNX graph that takes pixels in [0, 1],
equal under onnxruntime to PyTorch's encoder on the run's normalised test images, at any batch size; the one-line
refusal when the extra is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from invprop.cli import main
from invprop.config import from_dict, preset
from invprop.engine import Trainer
from invprop.errors import ConfigError
from invprop.evaluation.loading import load_eval_context

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("digits-run")
    cfg = from_dict({"method": "simclr", "epochs": 1, "data": {"subset": 200}}, base=preset("digits", "simclr"))
    Trainer(cfg, run, progress=False).fit()
    return run


def test_the_graph_takes_pixels_and_gives_pytorchs_features_and_embedding(digits_run: Path, capsys) -> None:
    assert main(["-q", "export", "--checkpoint", str(digits_run), "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    assert "onnx weights written" in printed and "(N, 1, 8, 8) float32 pixels in [0, 1]" in printed
    session = onnxruntime.InferenceSession(str(digits_run / "encoder.onnx"), providers=["CPUExecutionProvider"])
    ctx = load_eval_context(digits_run, overrides={"device": "cpu"})
    mean = torch.tensor(ctx.splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(ctx.splits.std).view(1, -1, 1, 1)
    for size in (1, 5, 64):  # any batch size
        normalised = torch.stack([ctx.splits.test[i][1] for i in range(size)])  # the run's own test images
        pixels = normalised * std + mean
        features, embedding = session.run(["features", "embedding"], {"images": pixels.numpy()})
        with torch.no_grad():
            assert np.abs(features - ctx.encoder.features(normalised).numpy()).max() < 1e-4
            assert np.abs(embedding - ctx.encoder(normalised).numpy()).max() < 1e-4


def test_a_missing_extra_is_one_line_naming_it(digits_run: Path, monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--format onnx needs onnxruntime: pip install 'invprop\[onnx\]'"):
        from invprop.evaluation.onnx_export import require_onnx

        require_onnx()
    assert main(["-q", "export", "--checkpoint", str(digits_run), "--format", "onnx", "--out", "/tmp/x.onnx"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
