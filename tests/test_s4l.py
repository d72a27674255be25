"""S4L's self-supervised halves: which rows are one image's views, and the rotation head's targets."""

from __future__ import annotations

import torch

from invprop.core.margin_losses import batch_hard_triplet_loss
from invprop.evaluation.classifier import Classifier
from invprop.evaluation.s4l import ExemplarTask, RotationTask
from invprop.models import build_encoder


def _model() -> Classifier:
    torch.manual_seed(0)
    return Classifier(build_encoder("digits_convnet", "linear", 8, in_channels=1), 10).eval()


def test_exemplar_groups_the_view_major_rows_of_each_image() -> None:
    model, task = _model(), ExemplarTask(256, views=3)
    images = torch.rand(3 * 4, 1, 8, 8)  # 3 views of 4 images, view-major
    embeddings = task.head(model.backbone(images))
    expected = batch_hard_triplet_loss(embeddings, torch.tensor([0, 1, 2, 3] * 3))
    torch.testing.assert_close(task.loss(model, images), expected)
    wrong = batch_hard_triplet_loss(embeddings, torch.arange(4).repeat_interleave(3))
    assert not torch.allclose(task.loss(model, images), wrong)


def test_rotation_predicts_each_of_the_four_turns() -> None:
    model, task = _model(), RotationTask(256)
    images = torch.rand(5, 1, 8, 8)
    loss = task.loss(model, images)
    rotated = torch.cat([torch.rot90(images, r, dims=(-2, -1)) for r in range(4)])
    logits = task.head(model.backbone(rotated))
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(4).repeat_interleave(5))
    torch.testing.assert_close(loss, expected)
