"""DINO as a method: the loss of the student's every view against the teacher's centred full-size views, the
teacher and the centre after a step, the frozen last layer, the teacher temperature's warm-up, and the presets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invprop.config import preset
from invprop.core.self_distillation import balanced_teacher_distribution, dino_loss, koleo_loss, teacher_distribution
from invprop.methods import METHODS, Batch, BuildContext, StepOutput
from invprop.methods.distillation.dino import DINO
from invprop.models import ModelSettings, encoder_from
from invprop.settings import merge

D, K = 6, 5


def _dino(encoder: nn.Module | None = None, **options) -> DINO:
    torch.manual_seed(0)
    spec = METHODS.get("dino")
    settings = spec.new_sections()
    merge(settings, {"dino": {"prototypes": K, "base_momentum": 0.9, "final_momentum": 0.9, **options}})
    encoder = encoder if encoder is not None else nn.Sequential(nn.Flatten(), nn.Linear(16, D))
    method = spec.create(settings, encoder, BuildContext(40, D))
    assert isinstance(method, DINO)
    return method


def _step(method: DINO, crops: list[torch.Tensor], epoch: int = 3) -> StepOutput:
    out = method.training_step(Batch(torch.arange(4), tuple(crops), epoch))
    method.zero_grad()
    out.loss.backward()
    with torch.no_grad():
        for p in method.parameters():
            if p.grad is not None:
                p.sub_(0.5 * p.grad)
    method.after_step([out])
    return out


def _scores(encoder: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(F.normalize(encoder(x), dim=1))


def test_the_loss_is_every_student_view_against_the_teachers_centred_full_size_views() -> None:
    method = _dino(teacher_temperature=0.07, warmup_teacher_temperature=0.07)
    method.center.copy_(torch.randn(K))
    large, small = torch.randn(8, 1, 4, 4), torch.randn(12, 1, 2, 8)  # small crops: other shapes, same pixel count
    out = method.training_step(Batch(torch.arange(4), (large, small), epoch=3))
    with torch.no_grad():
        student = [*_scores(method.encoder, method.last_layer, large).split(4)]
        student += [*_scores(method.encoder, method.last_layer, small).split(4)]
        teacher = _scores(method.teacher, method.teacher_last_layer, large).split(4)
        probs = [teacher_distribution(t, method.center, 0.07) for t in teacher]
        expected = dino_loss(student, probs, 0.1)
    assert len(student) == 5 and torch.allclose(out.loss, expected, atol=1e-6)


def test_dinov2s_sinkhorn_centring_balances_both_views_teacher_outputs_together() -> None:
    method = _dino(centering="sinkhorn", teacher_temperature=0.07, warmup_teacher_temperature=0.07)
    images = torch.randn(8, 1, 4, 4)
    out = method.training_step(Batch(torch.arange(4), (images,), epoch=3))
    with torch.no_grad():
        student = [*_scores(method.encoder, method.last_layer, images).split(4)]
        teacher = _scores(method.teacher, method.teacher_last_layer, images)
        expected = dino_loss(student, [*balanced_teacher_distribution(teacher, method.center, 0.07).split(4)], 0.1)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert out.terms["loss_koleo"] == 0.0  # off


def test_dinov2s_koleo_term_adds_its_weight_times_the_sum_over_views_on_the_backbones_features() -> None:
    model = ModelSettings(backbone="digits_convnet", head="linear", embedding_dim=D)
    method = _dino(encoder_from(model, 1), koleo_weight=0.3)
    method.eval()
    images = torch.randn(8, 1, 8, 8)
    out = method.training_step(Batch(torch.arange(4), (images,), epoch=3))
    with torch.no_grad():
        features = method.encoder.backbone(images)
        koleo = koleo_loss(features[:4]) + koleo_loss(features[4:])
        student = [*_scores(method.encoder, method.last_layer, images).split(4)]
        teacher = _scores(method.teacher, method.teacher_last_layer, images).split(4)
        expected = dino_loss(student, [teacher_distribution(t, method.center, 0.04) for t in teacher], 0.1)
    assert float(out.terms["loss_koleo"]) == pytest.approx(0.3 * float(koleo), rel=1e-5)
    assert torch.allclose(out.loss, expected + 0.3 * koleo, atol=1e-5)


def test_after_a_step_the_teacher_follows_by_the_momentum_and_the_centre_moves_to_the_batch_mean() -> None:
    method = _dino(center_momentum=0.8)
    images = torch.randn(8, 1, 4, 4)
    teacher_before = [p.detach().clone() for p in method.teacher.parameters()]
    with torch.no_grad():
        mean = _scores(method.teacher, method.teacher_last_layer, images).mean(dim=0)
    _step(method, [images])
    for t, before, s in zip(method.teacher.parameters(), teacher_before, method.encoder.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * before + 0.1 * s, atol=1e-6)
    assert not torch.allclose(method.teacher[1].weight, method.encoder[1].weight)
    assert torch.allclose(method.center, 0.2 * mean, atol=1e-6)


def test_two_accumulated_chunks_move_the_centre_as_their_whole_batch_does() -> None:
    whole, chunked = _dino(), _dino()
    images = torch.randn(8, 1, 4, 4)
    whole.after_step([whole.training_step(Batch(torch.arange(4), (images,), epoch=3))])
    first, second = images.view(2, 4, 1, 4, 4)[:, :2].reshape(4, 1, 4, 4), images.view(2, 4, 1, 4, 4)[:, 2:]
    outs = [chunked.training_step(Batch(torch.arange(2), (chunk.reshape(4, 1, 4, 4),), epoch=3))
            for chunk in (first, second)]  # fmt: skip
    chunked.after_step(outs)
    assert torch.allclose(whole.center, chunked.center, atol=1e-6)


def test_the_last_layer_takes_no_gradient_in_its_frozen_epochs_and_learns_after() -> None:
    method = _dino(freeze_last_layer_epochs=1)
    images = torch.randn(8, 1, 4, 4)
    before = method.last_layer.direction.detach().clone()
    _step(method, [images], epoch=1)
    assert method.last_layer.direction.grad is None and torch.equal(method.last_layer.direction, before)
    assert method.encoder[1].weight.grad is not None
    _step(method, [images], epoch=2)
    assert method.last_layer.direction.grad is not None
    assert not torch.equal(method.last_layer.direction, before)


def test_the_teacher_temperature_warms_up_over_the_first_epochs_and_is_logged() -> None:
    method = _dino(warmup_teacher_temperature=0.04, teacher_temperature=0.07, warmup_teacher_temperature_epochs=3)
    images = torch.randn(8, 1, 4, 4)
    logged = [method.training_step(Batch(torch.arange(4), (images,), epoch=e)).terms["teacher_temperature"]
              for e in (1, 2, 3, 4)]  # fmt: skip
    assert logged == pytest.approx([0.04, 0.055, 0.07, 0.07])


def test_the_teacher_entropy_is_log_k_for_a_uniform_teacher() -> None:
    method = _dino()
    with torch.no_grad():
        for p in method.teacher_last_layer.parameters():
            p.zero_()
        method.teacher_last_layer.direction[:, 0] = 1.0  # every output scores the same
    out = method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 4, 4),), epoch=3))
    assert float(out.terms["teacher_entropy"]) == pytest.approx(torch.log(torch.tensor(float(K))).item(), rel=1e-6)


def test_the_presets_bring_the_published_recipes() -> None:
    resnet = preset("imagenet", "dino")
    assert (resnet.optim.optimizer, resnet.optim.lr, resnet.optim.weight_decay) == ("sgd", 0.03, 1e-4)
    assert (resnet.optim.final_weight_decay, resnet.optim.clip_grad, resnet.model.head) == (None, 3.0, "mlp3_gelu")
    assert (resnet.dino.prototypes, resnet.data.small_crop_scale) == (65536, [0.05, 0.14])
    cifar = preset("cifar10", "dino")
    assert (cifar.optim.optimizer, cifar.optim.lr, cifar.optim.clip_grad) == ("lars", 0.3, 0.0)
    assert cifar.optim.final_weight_decay is None
    assert (cifar.dino.prototypes, cifar.dino.teacher_temperature, cifar.model.hidden_dim) == (4096, 0.07, 2048)
    assert preset("cifar10-vit", "dino").data.small_crop_scale == [0.05, 0.4]


def test_the_teachers_last_layer_follows_the_students_too() -> None:
    method = _dino()
    before = method.teacher_last_layer.direction.detach().clone()
    _step(method, [torch.randn(8, 1, 4, 4)], epoch=2)
    expected = 0.9 * before + 0.1 * method.last_layer.direction
    assert torch.allclose(method.teacher_last_layer.direction, expected, atol=1e-6)
    assert not torch.allclose(method.teacher_last_layer.direction, before)


def test_the_teachers_momentum_rises_on_a_cosine_over_the_run() -> None:
    torch.manual_seed(0)
    spec = METHODS.get("dino")
    settings = spec.new_sections()
    merge(settings, {"dino": {"prototypes": K, "base_momentum": 0.99, "final_momentum": 1.0}})
    method = spec.create(settings, nn.Sequential(nn.Flatten(), nn.Linear(16, D)), BuildContext(40, D, total_steps=10))
    images = torch.randn(8, 1, 4, 4)
    logged = [method.training_step(Batch(torch.arange(4), (images,), 2, step)).terms["momentum"] for step in (0, 5, 10)]
    assert logged == pytest.approx([0.99, 0.995, 1.0])


def test_the_scores_are_float32_under_bfloat16_autocast() -> None:
    method = _dino()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = method.last_layer(torch.randn(4, D))
        out = method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 4, 4),), epoch=3))
    assert scores.dtype == torch.float32 and out.update.mean.dtype == torch.float32


@pytest.mark.parametrize(
    ("option", "why"), [({"centering": "sinkhorn"}, "balances"), ({"koleo_weight": 0.1}, "nearest")]
)
def test_dinov2s_options_refuse_gradient_accumulation_in_one_line(tmp_path, option: dict, why: str) -> None:
    from invprop.config import from_dict
    from invprop.engine import Trainer
    from invprop.errors import ConfigError

    cfg = from_dict({"method": "dino", "dino": option, "optim": {"accumulate": 2}}, base=preset("digits", "dino"))
    with pytest.raises(ConfigError, match=f"method dino does not accumulate gradients .*{why}") as error:
        Trainer(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(error.value)
