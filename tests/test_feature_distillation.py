"""The distillation loss, queue and mixup against their formulas written out per sample and per row."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from invprop.core.feature_distillation import mixup, next_queue, queue_distillation_loss, queue_size_for


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    return [e / sum(exps) for e in exps]


def test_the_loss_is_the_mean_kl_from_the_teachers_to_the_students_similarities_to_the_queue() -> None:
    torch.manual_seed(0)
    student, teacher = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)
    queue, tau = F.normalize(torch.randn(5, 4), dim=1), 0.07
    expected = 0.0
    for b in range(3):
        p = _softmax([float(teacher[b] @ q) / tau for q in queue])
        s = _softmax([float(student[b] @ q) / tau for q in queue])
        expected += sum(pk * (math.log(pk) - math.log(sk)) for pk, sk in zip(p, s))
    assert float(queue_distillation_loss(student, teacher, queue, tau)) == pytest.approx(expected / 3, rel=1e-4)
    assert float(queue_distillation_loss(teacher, teacher, queue, tau)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("images", "rows"), [(49, 16), (50, 32), (1347, 512), (10_000, 4096), (50_000, 8192)])
def test_the_automatic_queue_follows_lightlytrains_buckets(images: int, rows: int) -> None:
    assert queue_size_for(images) == rows


def test_the_queue_takes_the_batch_first_and_drops_its_oldest_rows() -> None:
    queue = torch.arange(5.0).view(5, 1)
    assert next_queue(queue, torch.tensor([[10.0], [11.0]])).flatten().tolist() == [10, 11, 0, 1, 2]
    assert next_queue(queue, torch.arange(20.0, 27.0).view(7, 1)).flatten().tolist() == [20, 21, 22, 23, 24]


def test_mixup_blends_each_image_with_the_one_the_order_names() -> None:
    images = torch.tensor([[1.0], [2.0], [4.0]])
    out = mixup(images, 0.25, torch.tensor([2, 0, 1]))
    assert out.flatten().tolist() == pytest.approx([0.25 * 1 + 0.75 * 4, 0.25 * 2 + 0.75 * 1, 0.25 * 4 + 0.75 * 2])
