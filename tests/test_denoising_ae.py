"""The denoising autoencoder: the encoder sees the corrupted image, the loss compares the reconstruction with the
clean one, and impossible settings are refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.core.reconstruction_losses import reconstruction_cross_entropy
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.reconstruction.denoising_ae import DenoisingAutoencoder

MEAN, STD = (0.3,), (0.2,)


class Recording(nn.Module):
    """A flattening encoder that keeps its last input."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 8)
        self.seen = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.linear(x.flatten(1))


def _method(**own: object) -> DenoisingAutoencoder:
    spec = METHODS.get("denoising-ae")
    sections = spec.new_sections()
    for key, value in own.items():
        setattr(sections.denoising_ae, key, value)
    method = spec.create(sections, Recording(), BuildContext(10, 8, in_channels=1, mean=MEAN, std=STD, image_size=8))
    assert isinstance(method, DenoisingAutoencoder)
    return method


def test_the_encoder_sees_the_masked_image_and_the_loss_compares_with_the_clean_one() -> None:
    torch.manual_seed(0)
    method = _method(noise=0.5)
    pixels = torch.rand(3, 1, 8, 8) * 0.8 + 0.1  # no pixel is 0 before masking
    images = (pixels - MEAN[0]) / STD[0]
    torch.manual_seed(1)
    out = method.training_step(Batch.of(torch.arange(3), images))
    seen = method.encoder.seen * STD[0] + MEAN[0]
    destroyed = seen.abs() < 1e-6
    assert destroyed.flatten(1).sum(dim=1).tolist() == [32, 32, 32]
    assert torch.allclose(seen[~destroyed], pixels[~destroyed], atol=1e-6)
    expected = reconstruction_cross_entropy(method.decoder(method.encoder(method.encoder.seen)), pixels)
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    out.loss.backward()
    assert method.encoder.linear.weight.grad is not None


def test_gaussian_noise_and_the_squared_error_are_settings() -> None:
    torch.manual_seed(2)
    method = _method(corruption="gaussian", noise=0.1, loss="squared")
    clean, corrupted, outputs = method.reconstruct(torch.zeros(2, 1, 8, 8))
    assert 0.05 < float((corrupted - clean).std()) < 0.15
    assert torch.equal(method.output_image(torch.full((1, 1, 2, 2), 3.0)), torch.ones(1, 1, 2, 2))


def test_masking_every_component_and_an_unknown_side_are_refused() -> None:
    with pytest.raises(ConfigError, match="below 1"):
        _method(noise=1.0)
    spec = METHODS.get("denoising-ae")
    with pytest.raises(ConfigError, match="image_size"):
        spec.create(spec.new_sections(), Recording(), BuildContext(10, 8, in_channels=1, mean=MEAN, std=STD))
