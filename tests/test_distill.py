"""distill as a method: its loss recomputed from the same mixup (the student's projected features and the frozen
teacher's on the teacher's side and normalisation, against the queue with the batch joined), the queue after a step,
a teacher that is neither trained nor saved, a teacher file loaded as its weights, refusals, and the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from invprop.config import preset
from invprop.core.feature_distillation import mixup, next_queue, queue_distillation_loss
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.distillation.distill import Distill
from invprop.models import ModelSettings, encoder_from
from invprop.models.timm_backbone import TimmBackbone, TimmOptions
from invprop.settings import merge

MEAN, STD = 0.3, 0.4
TEST_TEACHER = {"teacher": "timm:test_resnet", "teacher_pretrained": False, "teacher_image_size": 12}


def _distill(**options) -> Distill:
    torch.manual_seed(0)
    spec = METHODS.get("distill")
    settings = spec.new_sections()
    merge(settings, {"distill": {**TEST_TEACHER, "queue_size": 6, **options}})
    encoder = encoder_from(ModelSettings(backbone="digits_convnet", head="linear", embedding_dim=8), 1)
    spec.freeze_unused(encoder)
    method = spec.create(settings, encoder, BuildContext(40, 8, in_channels=1, mean=(MEAN,), std=(STD,)))
    assert isinstance(method, Distill)
    return method


def test_the_loss_is_the_students_projected_features_against_the_teachers_over_the_queue_with_the_batch() -> None:
    method = _distill()
    method.eval()
    method.queue.copy_(F.normalize(torch.randn(6, method.teacher.width), dim=1))
    images = torch.randn(4, 1, 8, 8)
    torch.manual_seed(3)
    out = method.training_step(Batch(torch.arange(4), (images,), epoch=1))
    torch.manual_seed(3)
    weight, order = float(torch.rand(())), torch.randperm(4)
    mixed = mixup(images, weight, order)
    with torch.no_grad():
        raw = F.interpolate(mixed * STD + MEAN, size=(12, 12), mode="bilinear", align_corners=False)
        teacher = F.normalize(method.teacher.net(raw), dim=1)  # a random teacher: no normalisation of its own
        student = F.normalize(method.projection(method.encoder.backbone(mixed)), dim=1)
        expected = queue_distillation_loss(student, teacher, next_queue(method.queue, teacher), 0.07)
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert out.terms["mixup_weight"] == pytest.approx(weight)


def test_after_a_step_the_batch_heads_the_queue_and_only_the_student_learns() -> None:
    method = _distill()
    teacher_before = {k: v.clone() for k, v in method.teacher.net.state_dict().items()}
    out = method.training_step(Batch(torch.arange(4), (torch.randn(4, 1, 8, 8),), epoch=1))
    out.loss.backward()
    method.after_step([out])
    assert torch.equal(method.queue[:4], out.update) and method.queue[4:].abs().sum() == 0
    assert method.projection.weight.grad is not None
    assert all(p.grad is None for p in method.teacher.net.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in method.teacher.net.state_dict().items())
    assert not any(key.startswith("teacher") for key in method.state_dict())
    assert not method.teacher.net.training


def test_a_teacher_file_is_loaded_as_the_teachers_weights(tmp_path: Path) -> None:
    torch.manual_seed(7)
    saved = TimmBackbone("timm:test_resnet", 1, None, TimmOptions())
    path = tmp_path / "teacher.pth"
    torch.save(saved.net.state_dict(), path)
    method = _distill(teacher_pretrained=True, teacher_file=str(path))
    loaded = method.teacher.net.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.net.state_dict().items())


def test_a_teacher_trained_on_other_data_sees_the_images_normalised_as_its_data_were(tmp_path: Path) -> None:
    torch.manual_seed(7)
    saved = TimmBackbone("timm:test_resnet", 1, None, TimmOptions())
    path = tmp_path / "teacher.pth"
    torch.save(saved.net.state_dict(), path)
    method = _distill(teacher_pretrained=True, teacher_file=str(path), teacher_mean=[0.5], teacher_std=[0.2])
    images = torch.randn(3, 1, 8, 8)
    raw = F.interpolate(images * STD + MEAN, size=(12, 12), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = F.normalize(saved.eval()((raw - 0.5) / 0.2), dim=1)
    torch.testing.assert_close(method.teacher(images), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="distill.teacher_std has 3 value.* 1 channel"):
        _distill(teacher_pretrained=True, teacher_file=str(path), teacher_std=[0.2, 0.2, 0.2])


def test_a_vit_teacher_trained_on_small_images_is_built_with_its_patch_side(tmp_path: Path) -> None:
    torch.manual_seed(7)
    saved = TimmBackbone("timm:test_vit", 1, 12, TimmOptions(patch_size=4))  # as an invprop run's export is
    path = tmp_path / "vit.pth"
    torch.save(saved.net.state_dict(), path)
    method = _distill(teacher="timm:test_vit", teacher_pretrained=True, teacher_file=str(path), teacher_patch_size=4,
                      teacher_mean=[MEAN], teacher_std=[STD])  # fmt: skip
    images = torch.randn(3, 1, 8, 8)
    raw = F.interpolate(images * STD + MEAN, size=(12, 12), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = F.normalize(saved.eval()((raw - MEAN) / STD), dim=1)
    torch.testing.assert_close(method.teacher(images), expected, rtol=1e-5, atol=1e-6)


def test_a_missing_teacher_file_and_a_queue_as_large_as_the_data_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="distill.teacher_file .* does not exist") as error:
        _distill(teacher_pretrained=True, teacher_file=str(tmp_path / "none.pth"))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="distill.queue_size=40 is not below the 40 training images"):
        _distill(queue_size=40)


def test_the_preset_brings_lightlytrains_recipe() -> None:
    cfg = preset("imagenet", "distill")
    o = cfg.optim
    assert (o.optimizer, o.lr, o.lr_scaling, o.reference_batch, o.weight_decay) == ("lars", 1.8, "sqrt", 1536, 1e-6)
    assert (o.clip_grad, o.clip_scope, o.final_lr) == (1.0, "global", 0.001)
    assert cfg.distill.teacher == "timm:vit_base_patch14_dinov2.lvd142m"


def test_teacher_weights_this_machine_cannot_get_are_refused_naming_the_teachers_file_setting(monkeypatch) -> None:
    from invprop.models import timm_backbone

    monkeypatch.setattr(timm_backbone, "_reachable", lambda host: False)
    monkeypatch.setattr(timm_backbone, "_cached_weights", lambda timm, arch: None)
    with pytest.raises(ConfigError, match="cannot be reached.*set distill.teacher_file=PATH") as error:
        _distill(teacher_pretrained=True)
    assert "model.pretrained_file" not in str(error.value) and "\n" not in str(error.value)


def test_a_teacher_std_that_is_not_positive_and_a_patch_side_that_does_not_divide_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="distill.teacher_std must be positive"):
        _distill(teacher_std=[0.0])
    with pytest.raises(ConfigError, match="distill.teacher_patch_size") as error:
        _distill(teacher="timm:test_vit", teacher_patch_size=5)  # 5 does not divide the teacher's 12-pixel side
    assert "model.patch_size" not in str(error.value)
