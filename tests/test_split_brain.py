"""Split-brain autoencoders: the L half predicts ab and the ab half L, each half blind to what it predicts; the
targets are the quantised channels; a split other than Lab, and grey images, are refused."""

from __future__ import annotations

import pytest
import torch

from invprop.core.colour_space import lab_to_rgb, rgb_to_lab
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.reconstruction.split_brain import SplitBrain
from invprop.models import build_encoder

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _method(split: str = "lab") -> SplitBrain:
    torch.manual_seed(0)
    encoder = build_encoder("small_convnet", "linear", 8, colour_split=split, normalisation=(MEAN, STD))
    spec = METHODS.get("split-brain")
    method = spec.create(spec.new_sections(), encoder, BuildContext(10, 8, in_channels=3, mean=MEAN, std=STD,
                                                                    image_size=16))  # fmt: skip
    assert isinstance(method, SplitBrain)
    return method


def _normalised(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_each_half_is_blind_to_the_channels_it_predicts() -> None:
    method = _method().eval()
    rgb = torch.rand(2, 3, 16, 16) * 0.6 + 0.2
    lab = rgb_to_lab(rgb)
    recoloured = lab.clone()
    recoloured[:, 1:] = -recoloured[:, 1:] / 2  # other colours, the same lightness
    with torch.no_grad():
        _, _, ab_a, l_a = method.predict(_normalised(rgb))
        _, _, ab_b, l_b = method.predict(_normalised(lab_to_rgb(recoloured)))
    assert torch.allclose(ab_a, ab_b, atol=1e-3)  # the L half saw the same L
    assert not torch.allclose(l_a, l_b, atol=1e-3)  # the ab half saw other colours


def test_the_targets_are_the_quantised_channels_at_a_quarter_of_the_side() -> None:
    method = _method()
    lab = torch.zeros(1, 3, 16, 16)
    lab[:, 0] = 99.0
    lab[:, 0, :8] = 1.0
    ab, lightness = method.targets(lab)
    assert ab.shape[-2:] == (4, 4) and torch.allclose(ab.sum(dim=1), torch.ones(1, 4, 4))
    bins = lightness.argmax(dim=1)
    assert bins[0, 0, 0] == 0 and bins[0, 3, 0] == method.options.l_bins - 1
    assert torch.equal(lightness.sum(dim=1), torch.ones(1, 4, 4))
    out = method.training_step(Batch.of(torch.arange(2), _normalised(torch.rand(2, 3, 16, 16))))
    assert float(out.loss.detach()) == pytest.approx(
        float(out.terms["loss_l_to_ab"] + out.terms["loss_ab_to_l"]), rel=1e-5
    )


def test_another_split_and_one_channel_are_refused() -> None:
    with pytest.raises(ConfigError, match="colour_split=lab"):
        _method("ycbcr")
    with pytest.raises(ConfigError, match="colour images"):
        METHODS.get("split-brain").check_images(1)
