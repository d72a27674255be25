"""Spotting artifacts: the damage keeps its share of code positions and fills the others with their neighbourhood's
mean, the repair leaves kept positions alone, the autoencoder is frozen after its stage, and each network's loss
reaches only its own parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.core.reconstruction_losses import damage_location_loss
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.reconstruction.spot_artifacts import SpotArtifacts
from invprop.models import build_encoder
from invprop.models.autoencoder import drop_positions

MEAN, STD = (0.5,), (0.25,)


def _method() -> SpotArtifacts:
    torch.manual_seed(0)
    spec = METHODS.get("spot-artifacts")
    sections = spec.new_sections()
    sections.spot_artifacts.levels, sections.spot_artifacts.width = 2, 8
    encoder = build_encoder("digits_convnet", "mlp_bn", 8, in_channels=1)
    method = spec.create(sections, encoder, BuildContext(10, 8, in_channels=1, mean=MEAN, std=STD, image_size=8))
    assert isinstance(method, SpotArtifacts)
    return method


def test_the_damage_keeps_its_share_and_fills_the_rest_with_the_neighbourhoods_mean() -> None:
    torch.manual_seed(1)
    code = torch.randn(64, 2, 4, 4)
    damaged, kept = drop_positions(code, 0.4)
    assert float(kept.mean()) == pytest.approx(0.4, abs=0.05)
    assert torch.equal(damaged * kept, code * kept)
    b, r, c = (int(v) for v in (kept == 0).nonzero()[0][[0, 2, 3]])
    window = code[b, :, max(0, r - 1) : r + 2, max(0, c - 1) : c + 2]
    assert torch.allclose(damaged[b, :, r, c], window.mean(dim=(1, 2)))
    assert float(damage_location_loss(torch.zeros(1, 1, 2, 2), kept[:1, :, :2, :2])) == pytest.approx(0.6931, abs=1e-4)


def test_each_networks_loss_reaches_its_own_parameters_and_the_autoencoder_is_frozen_after_its_stage() -> None:
    method = _method()
    images = torch.randn(4, 1, 8, 8)
    batch = Batch.of(torch.arange(4), images)
    method.part_step("autoencoder", batch).loss.backward()
    assert all(p.grad is not None for p in method.autoencoder.parameters())
    assert all(p.grad is None for p in method.encoder.parameters())
    method.zero_grad(set_to_none=True)
    method.on_stage("adversarial")
    assert not method.autoencoder.training and not any(p.requires_grad for p in method.autoencoder.parameters())
    out = method.training_step(batch)
    out.loss.backward()
    assert set(out.terms) == {"loss_real_made", "loss_damage_location", "discriminator_accuracy"}
    assert all(p.grad is None for p in (*method.autoencoder.parameters(), *method.repairs.parameters()))
    assert method.realness.weight.grad is not None and method.damage_map.weight.grad is not None
    method.zero_grad(set_to_none=True)
    out = method.part_step("repair", batch)
    out.loss.backward()
    assert all(p.grad is not None for p in method.repairs.parameters())
    assert all(p.grad is None for p in method.autoencoder.parameters())
    assert float(out.loss.detach()) == pytest.approx(float(out.terms["loss_fool"] + 30 * out.terms["loss_kept_pixels"]))
    method.on_stage("autoencoder")
    assert all(p.requires_grad for p in method.autoencoder.parameters())


def test_the_part_modules_split_the_networks() -> None:
    method = _method()
    assert method.part_modules("autoencoder") == [method.autoencoder]
    assert method.part_modules("repair") == [method.repairs]
    assert isinstance(method.repairs, nn.ModuleList) and len(method.repairs) == 2
