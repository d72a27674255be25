"""DenseCL as a method: MoCo's loss plus lambda times the dense term (none before the warm-up ends), the second
queue fed with the pooled dense keys, the key dense projector following by momentum, and backbones without maps
refused in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invprop.core.dense_losses import dense_contrastive_loss, dense_correspondence
from invprop.errors import ConfigError
from invprop.methods.contrastive.densecl import DenseCL, DenseCLSettings
from invprop.methods.contrastive.moco import MoCo, MoCoSettings
from invprop.methods.method import Batch, BuildContext
from invprop.models import Encoder, build_encoder

D = 8


def _encoder() -> Encoder:
    torch.manual_seed(0)
    return build_encoder("digits_convnet", "mlp", D, in_channels=1)


def _batch(step: int = 0) -> Batch:
    views = torch.rand(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(step))
    return Batch.of(torch.arange(4), views[0], views[1], step=step)


def _densecl(**options: object) -> DenseCL:
    settings = DenseCLSettings(queue_size=16, base_momentum=0.9, final_momentum=0.9, **options)  # type: ignore[arg-type]
    return DenseCL(settings, _encoder(), BuildContext(100, D, in_channels=1))


def test_the_loss_is_mocos_global_term_plus_lambda_times_the_dense_term() -> None:
    method = _densecl(weight=0.25)
    moco = MoCo(MoCoSettings(queue_size=16, base_momentum=0.9, final_momentum=0.9), _encoder(),
                BuildContext(100, D, in_channels=1))  # fmt: skip
    batch = _batch()
    out = method.training_step(batch)
    assert torch.allclose(out.terms["loss_global"], moco.training_step(batch).loss)  # the same global term
    images = batch.images
    with torch.no_grad():
        online, key = method.encoder(images, maps=1), method.key_encoder(images, maps=1)
        r, t = method.dense_head(online.maps.last), method.key_dense_head(key.maps.last)
        b, c = online.maps.last, key.maps.last
        empty = torch.zeros(0, D)
        forward = dense_contrastive_loss(r[:4], t[4:], dense_correspondence(b[:4], c[4:]), empty, 0.2)
        backward = dense_contrastive_loss(r[4:], t[:4], dense_correspondence(b[4:], c[:4]), empty, 0.2)
    assert torch.allclose(out.terms["loss_dense"], (forward + backward) / 2)
    assert torch.allclose(out.loss, 0.75 * out.terms["loss_global"] + 0.25 * out.terms["loss_dense"])


def test_no_dense_term_before_the_warm_up_ends() -> None:
    method = _densecl(warmup_steps=3)
    method.queue.enqueue(torch.randn(16, D))
    method.dense_queue.enqueue(torch.randn(16, D))
    early, late = method.training_step(_batch(2)), method.training_step(_batch(3))
    assert torch.equal(early.loss, early.terms["loss_global"])
    assert not torch.equal(late.loss, late.terms["loss_global"])


def test_after_a_step_the_second_queue_holds_the_pooled_dense_keys_and_the_key_projector_moves() -> None:
    method = _densecl()
    batch = _batch()
    out = method.training_step(batch)
    with torch.no_grad():
        t = method.key_dense_head(method.key_encoder(batch.images, maps=1).maps.last)
    before = [p.clone() for p in method.key_dense_head.parameters()]
    out.loss.backward()
    with torch.no_grad():
        for p in method.dense_head.parameters():
            p -= 0.5 * p.grad  # an optimiser step on the online projector
    method.after_step([out])
    expected = F.normalize(torch.cat([t[4:].mean(dim=(2, 3)), t[:4].mean(dim=(2, 3))]), dim=1)
    assert torch.allclose(method.dense_queue.rows(), expected, atol=1e-6)
    for old, new, online in zip(before, method.key_dense_head.parameters(), method.dense_head.parameters(),
                                strict=True):  # fmt: skip
        assert torch.allclose(new, 0.9 * old + 0.1 * online)


def test_a_backbone_without_maps_is_refused_in_one_line() -> None:
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    flat.feature_dim = 16  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="gives no feature maps") as err:
        DenseCL(DenseCLSettings(queue_size=16), Encoder(flat, nn.Linear(16, D)), BuildContext(100, D, in_channels=1))
    assert "\n" not in str(err.value)
