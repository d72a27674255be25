"""Larsson et al.'s colourisation: a grey input, hue and chroma targets at pixels drawn away from the border,
hypercolumns sampled where the pixels are, the chroma-weighted loss, and the refusals."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch

from invprop.core.colour_space import hue_chroma, hue_chroma_to_rgb
from invprop.core.pretext_losses import hue_chroma_loss
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.pretext.colorization_larsson import ColorizationLarsson, colourisation_rows
from invprop.models import build_encoder
from invprop.models.hypercolumn import sample_maps

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _method(**own: object) -> ColorizationLarsson:
    torch.manual_seed(0)
    spec = METHODS.get("colorization-larsson")
    sections = spec.new_sections()
    for key, value in {"edge": 2, "locations": 16, **own}.items():
        setattr(sections.colorization_larsson, key, value)
    encoder = build_encoder("small_convnet", "mlp_bn", 8, in_channels=3)
    context = BuildContext(10, 8, in_channels=3, mean=MEAN, std=STD, image_size=16)
    method = spec.create(sections, encoder, context)
    assert isinstance(method, ColorizationLarsson)
    return method


def _normalised(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_hue_and_chroma_are_hsvs_and_invert_with_the_grey_value() -> None:
    torch.manual_seed(1)
    rgb = torch.rand(20, 3)
    hue, chroma = hue_chroma(rgb)
    for (r, g, b), h, c in zip(rgb.tolist(), hue.tolist(), chroma.tolist()):
        assert h == pytest.approx(colorsys.rgb_to_hsv(r, g, b)[0], abs=1e-5)
        assert c == pytest.approx(max(r, g, b) - min(r, g, b), abs=1e-6)
    assert torch.allclose(hue_chroma_to_rgb(hue, chroma, rgb.mean(dim=1)), rgb, atol=1e-5)


def test_the_loss_weights_each_pixels_hue_term_by_its_chroma() -> None:
    torch.manual_seed(2)
    chroma_logits, hue_logits = torch.randn(3, 4), torch.randn(3, 4)
    chroma_bins, hue_bins, chroma = torch.tensor([0, 3, 1]), torch.tensor([2, 2, 0]), torch.tensor([0.0, 0.5, 1.0])

    def ce(scores: list[float], target: int) -> float:
        return -(scores[target] - math.log(sum(math.exp(s) for s in scores)))

    expected = (
        sum(ce(chroma_logits[i].tolist(), int(chroma_bins[i])) for i in range(3)) / 3
        + sum(5.0 * float(chroma[i]) * ce(hue_logits[i].tolist(), int(hue_bins[i])) for i in range(3)) / 3
    )
    loss = hue_chroma_loss(chroma_logits, chroma_bins, hue_logits, hue_bins, chroma, 5.0)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_hypercolumns_sample_every_map_at_the_pixel_whatever_its_side() -> None:
    fine = torch.arange(16.0).view(1, 1, 4, 4)
    coarse = torch.arange(4.0).view(1, 1, 2, 2)
    point = torch.tensor([[[-0.25, 0.25]]])  # the centre of pixel (row 2, column 1) of 4 x 4
    column = sample_maps([fine, coarse], point)
    assert column.shape == (1, 1, 2)
    assert float(column[0, 0, 0]) == pytest.approx(9.0)  # row 2, column 1 of the fine map
    assert float(column[0, 0, 1]) == pytest.approx(0.25 * 0.25 + 0.75 * 2.25)  # bilinear: x 0.25, y 0.75 of its cells


def test_the_input_is_grey_and_the_points_avoid_the_border() -> None:
    method = _method()
    images = _normalised(torch.rand(2, 3, 16, 16))
    grey = method.pixels.to_pixels(method.grey(images))
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-5) and torch.allclose(grey[:, 0], grey[:, 2], atol=1e-5)
    assert torch.allclose(grey[:, 0], method.pixels.to_pixels(images).mean(dim=1), atol=1e-5)
    torch.manual_seed(3)
    at, points = method.draw_points(4, 16, torch.device("cpu"))
    assert at.shape == (4, 16, 2) and int(at.min()) >= 2 and int(at.max()) <= 13
    assert torch.allclose(points, (at.flip(-1).float() * 2 + 1) / 16 - 1)
    out = method.training_step(Batch.of(torch.arange(2), images))
    out.loss.backward()
    assert torch.isfinite(out.loss) and method.classifier.trunk[0].weight.grad is not None


def test_the_report_rows_colour_the_grey_image_at_every_pixel() -> None:
    method = _method().eval()
    with torch.no_grad():
        rows = colourisation_rows(method, _normalised(torch.rand(3, 3, 16, 16)))
    assert [caption for caption, _ in rows] == ["input", "grey input", "colours predicted"]
    made = rows[2][1]
    assert made.shape == (3, 3, 16, 16) and float(made.min()) >= 0 and float(made.max()) <= 1


def test_a_border_that_leaves_no_pixel_and_too_many_stages_are_refused() -> None:
    with pytest.raises(ConfigError, match="edge"):
        _method(edge=8)
    with pytest.raises(ConfigError, match="stages"):
        _method(stages=9)
