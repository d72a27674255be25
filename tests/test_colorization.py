"""Colorization as a method: a colourless input, soft targets at a quarter of the side, rebalancing weights from
one epoch, the loss per pixel, and the refusal of grayscale data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invprop.core.pretext_losses import rebalanced_colour_loss
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.pretext.colorization import Colorization

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _method() -> Colorization:
    torch.manual_seed(0)
    spec = METHODS.get("colorization")
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8))
    method = spec.create(spec.new_sections(), encoder, BuildContext(10, 8, False, 3, MEAN, STD))
    assert isinstance(method, Colorization)
    return method


def _normalised(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_the_input_is_colourless_and_the_targets_a_quarter_of_the_side():
    method = _method()
    images = _normalised(torch.rand(2, 3, 16, 16))
    grey, lab = method.colours(images)
    rgb = grey * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-6) and torch.allclose(rgb[:, 1], rgb[:, 2], atol=1e-6)
    assert torch.allclose(rgb[:, 0], lab[:, 0] / 100, atol=1e-6)
    assert method.target_side(images) == 4
    out = method.training_step(Batch.of(torch.arange(2), images))
    out.loss.backward()
    assert torch.isfinite(out.loss) and set(out.terms) == {"loss_colour"}
    assert all(p.grad is not None for p in (*method.encoder.parameters(), *method.decoder.parameters()))


def test_rebalancing_weights_come_from_one_epoch():
    method = _method()
    red = torch.zeros(4, 3, 16, 16)
    red[:, 0] = 1
    method.before_training([(torch.arange(4), _normalised(red))])
    assert bool(method.weights_set)
    red_class = int(torch.cdist(torch.tensor([[80.09, 67.20]]), method.bins).argmin())
    assert float(method.weights[red_class]) == float(method.weights.min())  # the common colour weighs least


def test_loss_matches_the_formula_per_pixel():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 2, 2, generator=g)
    targets = torch.softmax(torch.randn(2, 4, 2, 2, generator=g), dim=1)
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    total = 0.0
    for b in range(2):
        for y in range(2):
            for x in range(2):
                scores = [float(logits[b, q, y, x]) for q in range(4)]
                norm = math.log(sum(math.exp(s) for s in scores))
                z = [float(targets[b, q, y, x]) for q in range(4)]
                v = float(weights[max(range(4), key=lambda q: z[q])])
                total += -v * sum(z[q] * (scores[q] - norm) for q in range(4))
    assert math.isclose(float(rebalanced_colour_loss(logits, targets, weights)), total / 8, rel_tol=1e-5)


def test_grayscale_data_is_refused():
    spec = METHODS.get("colorization")
    with pytest.raises(ConfigError, match="needs colour images, and these have 1 channel"):
        spec.create(spec.new_sections(), nn.Linear(1, 1), BuildContext(10, 8, False, 1, (0.5,), (0.2,)))


def test_stop_and_resume_on_colour_images_ends_where_an_uninterrupted_run_does(tmp_path):
    import numpy as np
    from PIL import Image

    from invprop.config import from_dict
    from resume_check import assert_resumes_exactly

    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = from_dict({"method": "colorization", "epochs": 2, "data": {"name": f"imagefolder:{tmp_path / 'images'}",
                     "image_size": 16, "cache_dir": None}, "model": {"backbone": "small_convnet"},
                     "optim": {"batch_size": 8}})  # fmt: skip
    state = assert_resumes_exactly(cfg, tmp_path)
    assert bool(state["weights_set"])


def test_compare_refuses_colorization_on_grayscale_before_any_work(tmp_path, capsys):
    from invprop.cli import main

    code = main(["-q", "compare", "--methods", "simclr,colorization", "--epochs", "1", "--out", str(tmp_path / "c")])
    assert code == 2
    assert "method colorization needs colour images, and these have 1 channel(s)" in capsys.readouterr().err
    assert not (tmp_path / "c" / "simclr").exists()
