"""The context encoder: the encoder never sees the hidden pixels, the reconstruction counts the predicted region
only, the discriminator is a part of its own that sees real and inpainted regions, and its weight 0 leaves the
reconstruction alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.core.reconstruction_losses import weighted_squared_error
from invprop.data.masks import centre_region_weights
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.reconstruction.context_encoder import ContextEncoder

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _method(**own: object) -> ContextEncoder:
    torch.manual_seed(0)
    spec = METHODS.get("context-encoder")
    sections = spec.new_sections()
    for key, value in own.items():
        setattr(sections.context_encoder, key, value)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8))
    method = spec.create(sections, encoder, BuildContext(10, 8, in_channels=3, mean=MEAN, std=STD, image_size=16))
    assert isinstance(method, ContextEncoder)
    return method


def test_what_is_hidden_does_not_reach_the_encoder() -> None:
    for region in ("centre", "random"):
        method = _method(region=region, share=0.5, centre_share=0.5)
        images = torch.randn(2, 3, 16, 16)
        torch.manual_seed(3)
        hidden, _, made = method._inpaint(images)  # noqa: SLF001
        changed = images + 5 * hidden.float()
        torch.manual_seed(3)
        _, _, again = method._inpaint(changed)  # noqa: SLF001
        assert hidden.any() and torch.allclose(made, again)


def test_the_centre_loss_is_the_weighted_error_of_the_square_and_the_adversary_adds_its_weight() -> None:
    method = _method(region="centre", centre_share=0.5, adversarial_weight=0.0, reconstruction_weight=1.0)
    images = torch.randn(2, 3, 16, 16)
    out = method.training_step(Batch.of(torch.arange(2), images))
    hidden, weights = centre_region_weights(16, 0.5, round(16 / 32), 10.0)
    made = method.decoder(method.encoder(images.masked_fill(hidden, 0.0)))
    assert float(out.loss.detach()) == pytest.approx(
        float(weighted_squared_error(made, images, weights).detach()), rel=1e-5
    )
    adversarial = _method(region="centre", centre_share=0.5, adversarial_weight=0.5, reconstruction_weight=1.0)
    out = adversarial.training_step(Batch.of(torch.arange(2), images))
    assert float(out.loss.detach()) == pytest.approx(
        float(out.terms["loss_reconstruction"] + 0.5 * out.terms["loss_adversarial"])
    )


def test_the_discriminator_is_its_own_part_and_learns_to_tell_real_from_inpainted() -> None:
    method = _method(region="centre", centre_share=0.5)
    assert METHODS.get("context-encoder").parts[0].name == "discriminator"
    assert method.part_modules("discriminator") == [method.discriminator]
    assert method.discriminator.layers[0].in_channels == 3  # it sees the 8 x 8 square
    optimiser = torch.optim.Adam(method.discriminator.parameters(), lr=1e-2)
    images = torch.randn(16, 3, 16, 16)
    first = None
    for _ in range(30):
        optimiser.zero_grad()
        out = method.part_step("discriminator", Batch.of(torch.arange(16), images))
        out.loss.backward()
        optimiser.step()
        first = float(out.loss.detach()) if first is None else first
    assert first == pytest.approx(1.386, abs=0.2) and float(out.loss.detach()) < 0.5 * first
    assert float(out.terms["discriminator_accuracy"]) > 0.9
    assert all(p.grad is None for p in method.decoder.parameters())  # the part's step leaves the generator alone
