"""SimCLRv2's distillation: the soft-label loss against its formula, and ``invprop eval distill`` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from invprop.cli import main
from invprop.core.distillation_losses import soft_label_distillation_loss


@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_soft_label_loss_matches_the_per_sample_formula(tau: float) -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    expected = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        zt = sum(math.exp(v / tau) for v in t)
        zs = sum(math.exp(v / tau) for v in s)
        expected -= sum(math.exp(tv / tau) / zt * (sv / tau - math.log(zs)) for sv, tv in zip(s, t))
    assert float(soft_label_distillation_loss(student, teacher, tau)) == pytest.approx(expected / 4, rel=1e-5)


def test_soft_label_loss_is_the_teachers_entropy_at_its_minimum_and_leaves_the_teacher_alone() -> None:
    teacher = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    student = teacher.detach().clone().requires_grad_(True)
    loss = soft_label_distillation_loss(student, teacher, 1.0)
    p = torch.softmax(teacher.detach(), dim=1)
    assert float(loss.detach()) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)
    loss.backward()
    assert teacher.grad is None
    torch.testing.assert_close(student.grad, torch.zeros_like(student))  # softmax(s) - P^T = 0


def test_distill_reports_teacher_and_student_for_each_fraction(
    digits_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-q", "eval", "distill", "--checkpoint", str(digits_run), "--set", "eval.finetune_epochs=1"]
    assert main([*argv, "--set", "eval.distill_temperature=2"]) == 0
    out = capsys.readouterr().out
    for key in ("distill_1pct_teacher_top1", "distill_1pct_student_top1", "distill_10pct_student_top5"):
        assert key in out
    result = json.loads((digits_run / "metrics.json").read_text())["eval"][-1]
    assert result["protocol"] == "distill" and result["distill_temperature"] == 2.0
    assert result["distill_10pct_images"] == 130
    assert 0 <= result["distill_10pct_student_top1"] <= result["distill_10pct_student_top5"] <= 1
