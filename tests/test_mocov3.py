"""MoCo v3: its loss against the formula written per query (one process and a process's slice of a global batch),
the method's two directions and momentum encoder, the frozen patch projection of a ViT, and the standardised MLPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invprop.config import preset
from invprop.core.contrastive_losses import batch_keys_loss
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.contrastive.mocov3 import MoCoV3
from invprop.models import ModelSettings, encoder_from
from invprop.models.encoder import check_model_settings
from invprop.models.heads import standardised_mlp
from invprop.settings import merge

D = 6


def _per_query(q: torch.Tensor, k: torch.Tensor, tau: float, offset: int) -> float:
    losses = []
    for i in range(q.shape[0]):
        qi = q[i] / q[i].norm()
        scores = [float(qi @ (k[j] / k[j].norm())) / tau for j in range(k.shape[0])]
        top = max(scores)
        log_denominator = top + math.log(sum(math.exp(s - top) for s in scores))
        losses.append(-(scores[offset + i] - log_denominator))
    return 2 * tau * sum(losses) / len(losses)


@pytest.mark.parametrize(("tau", "offset"), [(1.0, 0), (0.2, 0), (0.2, 4)])
def test_the_loss_is_each_querys_cross_entropy_against_every_key_times_two_tau(tau: float, offset: int) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(4, 5) * 3, torch.randn(12, 5)
    if offset == 0:
        k = k[:4]
    assert float(batch_keys_loss(q, k, tau, offset)) == pytest.approx(_per_query(q, k, tau, offset), rel=1e-5)


def test_keys_take_no_gradient_and_queries_do() -> None:
    q, k = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    batch_keys_loss(q, k, 0.2).backward()
    assert q.grad is not None and k.grad is None


def _mocov3(**options) -> MoCoV3:
    torch.manual_seed(0)
    spec = METHODS.get("mocov3")
    settings = spec.new_sections()
    merge(settings, {"mocov3": {"predictor_hidden_dim": 8, "base_momentum": 0.9, "final_momentum": 0.9, **options}})
    method = spec.create(settings, nn.Sequential(nn.Flatten(), nn.Linear(16, D)), BuildContext(40, D))
    assert isinstance(method, MoCoV3)
    return method


def test_the_method_sums_both_directions_of_queries_against_the_other_views_keys() -> None:
    method = _mocov3(temperature=0.5)
    images = torch.randn(8, 1, 4, 4)
    out = method.training_step(Batch(torch.arange(4), (images,)))
    with torch.no_grad():
        q = method.predictor(method.encoder(images))
        k = method.target(images)
    expected = _per_query(q[:4], k[4:], 0.5, 0) + _per_query(q[4:], k[:4], 0.5, 0)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_after_a_step_the_momentum_encoder_follows_the_query_encoder() -> None:
    method = _mocov3()
    before = [p.detach().clone() for p in method.target.parameters()]
    out = method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 4, 4),)))
    out.loss.backward()
    with torch.no_grad():
        for p in method.parameters():
            if p.grad is not None:
                p.sub_(0.5 * p.grad)
    method.after_step([out])
    for t, b, s in zip(method.target.parameters(), before, method.encoder.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * s, atol=1e-6)
    assert not torch.allclose(method.target[1].weight, before[0])


def test_a_vits_patch_projection_can_be_frozen_out_of_the_optimiser_and_others_refuse_it_in_one_line() -> None:
    from invprop.engine.optimizer import parameter_groups

    vit = encoder_from(ModelSettings(backbone="timm:test_vit", patch_size=4, freeze_patch_embed=True), 3, 16)
    frozen = {n for n, p in vit.named_parameters() if not p.requires_grad}
    assert frozen and all("patch_embed" in n for n in frozen)
    optimised = {id(p) for group in parameter_groups(vit, 0.1, exclude_norm_and_bias=False) for p in group["params"]}
    assert all(id(p) not in optimised for n, p in vit.named_parameters() if n in frozen)
    assert any(id(p) in optimised for n, p in vit.named_parameters() if "blocks" in n)
    with pytest.raises(ConfigError, match="freeze_patch_embed=true needs a ViT") as error:
        encoder_from(ModelSettings(backbone="timm:test_convnext", freeze_patch_embed=True), 3, 16)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="applies to timm backbones"):
        check_model_settings(ModelSettings(backbone="digits_convnet", freeze_patch_embed=True))


def test_the_momentum_encoders_momentum_rises_on_a_cosine_over_the_run() -> None:
    spec = METHODS.get("mocov3")
    settings = spec.new_sections()
    merge(settings, {"mocov3": {"predictor_hidden_dim": 8}})
    method = spec.create(settings, nn.Sequential(nn.Flatten(), nn.Linear(16, D)), BuildContext(40, D, total_steps=10))
    images = torch.randn(8, 1, 4, 4)
    logged = [method.training_step(Batch(torch.arange(4), (images,), 1, step)).terms["momentum"] for step in (0, 5, 10)]
    assert logged == pytest.approx([0.99, 0.995, 1.0])


def test_the_vit_preset_gives_the_papers_vit_settings() -> None:
    vit = preset("cifar10-vit", "mocov3")
    assert (vit.model.head, vit.model.freeze_patch_embed, vit.mocov3.temperature) == ("mlp3_bn_std_out", True, 0.2)
    assert vit.mocov3.predictor_output_bn and not vit.optim.exclude_norm_and_bias
    assert (vit.optim.optimizer, vit.optim.lr, vit.optim.weight_decay) == ("adamw", 1.5e-4, 0.1)
    resnet = preset("imagenet", "mocov3")
    assert (resnet.optim.optimizer, resnet.mocov3.temperature, resnet.model.head) == ("lars", 1.0, "mlp_bn_std_out")


def test_the_standardised_mlp_ends_in_a_batchnorm_without_scale_or_shift_whose_outputs_are_standardised() -> None:
    torch.manual_seed(0)
    mlp = standardised_mlp(3, 5, 16, 4).train()
    assert [type(m).__name__ for m in mlp][-1] == "BatchNorm1d" and not mlp[-1].affine
    assert all(m.bias is None for m in mlp if isinstance(m, nn.Linear))
    out = mlp(torch.randn(64, 5) * 7 + 3)
    assert torch.allclose(out.mean(dim=0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(out.var(dim=0, unbiased=False), torch.ones(4), atol=1e-3)
    plain = standardised_mlp(2, 5, 16, 4, last_bn=False)
    assert isinstance(plain[-1], nn.Linear)
