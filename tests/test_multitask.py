"""The multi-task method: tasks on one trunk, each with its own head, the loss their weighted sum."""

from __future__ import annotations

import re

import pytest
import torch

from invprop.core.pretext_losses import weighted_task_sum
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext
from invprop.methods.pretext.multitask import MultiTask, MultiTaskOptions, MultiTaskSettings
from invprop.models import build_encoder


def test_weighted_task_sum_is_the_sum_of_weighted_losses() -> None:
    losses, weights = torch.tensor([2.0, 0.5, 4.0]), torch.tensor([1.0, 2.0, 0.25])
    assert float(weighted_task_sum(losses, weights)) == pytest.approx(2.0 + 1.0 + 1.0)


def _method(tasks: list[str], weights: list[float] | None = None) -> MultiTask:
    torch.manual_seed(0)
    settings = MultiTaskSettings(multitask=MultiTaskOptions(tasks=tasks, weights=weights))
    settings.exemplar.dropout = 0.0
    encoder = build_encoder("digits_convnet", "mlp_bn", 16, in_channels=1)
    return MultiTask(settings, encoder, BuildContext(num_samples=10, embedding_dim=16, in_channels=1))


def test_the_tasks_share_the_backbone_and_own_their_heads() -> None:
    method = _method(["rotnet", "exemplar"])
    rotnet, exemplar = method.methods
    assert rotnet.encoder is method.encoder
    assert exemplar.encoder.backbone is method.encoder.backbone
    assert exemplar.encoder.head is not method.encoder.head
    head_weights = [p for p in exemplar.encoder.head.parameters() if p.dim() == 2]
    assert not torch.equal(head_weights[0], next(p for p in method.encoder.head.parameters() if p.dim() == 2))


def test_the_loss_is_the_weighted_sum_of_the_tasks_losses() -> None:
    method = _method(["rotnet", "exemplar"], weights=[0.5, 2.0])
    method.eval()  # BatchNorm's running statistics: the same forward for every call below
    batch = Batch.of(torch.arange(4), torch.rand(4, 1, 8, 8))
    out = method.training_step(batch)
    rotation, surrogate = (task.training_step(batch).loss.detach() for task in method.methods)
    assert float(out.loss.detach()) == pytest.approx(0.5 * float(rotation) + 2.0 * float(surrogate), rel=1e-5)
    assert {"loss_rotation", "loss_surrogate"} <= set(out.terms)


@pytest.mark.parametrize(
    ("tasks", "weights", "message"),
    [
        (["rotnet", "exemplr"], None, "unknown task 'exemplr' (did you mean exemplar?)"),
        ([], None, "multitask.tasks is empty"),
        (["rotnet", "rotnet"], None, "names a task twice"),
        (["rotnet", "exemplar"], [1.0], "has 1 values for 2 tasks"),
    ],
)
def test_bad_task_lists_get_one_line_errors(tasks: list[str], weights: list[float] | None, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _method(tasks, weights)
