"""Exemplar-CNN: its objective against the formula per sample, and the method's network and warning."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from invprop.core.pretext_losses import surrogate_class_loss
from invprop.methods.classification.exemplar import Exemplar, ExemplarSettings
from invprop.methods.method import BuildContext


def test_surrogate_class_loss_matches_the_per_sample_formula() -> None:
    torch.manual_seed(0)
    logits, classes = torch.randn(5, 7), torch.tensor([0, 6, 3, 3, 1])
    expected = (
        sum(
            -(float(logits[i, int(c)]) - math.log(sum(math.exp(float(v)) for v in logits[i])))
            for i, c in enumerate(classes)
        )
        / 5
    )
    assert float(surrogate_class_loss(logits, classes)) == pytest.approx(expected, rel=1e-6)


def test_surrogate_class_loss_known_answer_and_float32_under_autocast() -> None:
    logits = torch.zeros(2, 4)
    assert float(surrogate_class_loss(logits, torch.tensor([1, 2]))) == pytest.approx(math.log(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert surrogate_class_loss(torch.randn(3, 4), torch.tensor([0, 1, 2])).dtype == torch.float32


def _context(num_samples: int) -> BuildContext:
    return BuildContext(num_samples=num_samples, embedding_dim=6)


def test_one_class_per_image_with_a_bias_behind_relu_and_dropout() -> None:
    method = Exemplar(ExemplarSettings(dropout=0.25), torch.nn.Linear(4, 6), _context(9))
    relu, dropout, linear = method.classifier
    assert isinstance(relu, torch.nn.ReLU) and dropout.p == 0.25
    assert linear.weight.shape == (9, 6) and linear.bias is not None


def test_more_images_than_the_paper_used_classes_gets_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        Exemplar(ExemplarSettings(max_classes=8), torch.nn.Linear(4, 6), _context(9))
    assert len(caplog.records) == 1 and "data.subset=8" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Exemplar(ExemplarSettings(max_classes=9), torch.nn.Linear(4, 6), _context(9))
    assert not caplog.records
