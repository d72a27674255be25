"""Deep InfoMax as a method: the local features come from the stage asked for, the loss is the chosen estimator's
on the critics' scores, and a stage the backbone lacks is refused in one line."""

from __future__ import annotations

import pytest
import torch

from invprop.core.mutual_information import local_global_scores, local_infonce_loss
from invprop.errors import ConfigError
from invprop.methods.infomax.dim import DeepInfoMax, DIMSettings, minus_jsd
from invprop.methods.method import Batch, BuildContext
from invprop.models import build_encoder


def _method(**options: object) -> DeepInfoMax:
    torch.manual_seed(0)
    encoder = build_encoder("digits_convnet", "mlp_bn", 16, in_channels=1)
    return DeepInfoMax(DIMSettings(units=32, **options), encoder, BuildContext(50, 16, in_channels=1))  # type: ignore[arg-type]


@pytest.mark.parametrize(("estimator", "loss"), [("jsd", minus_jsd), ("infonce", local_infonce_loss)])
def test_the_loss_is_the_estimators_on_the_critics_scores_of_the_chosen_map(estimator: str, loss: object) -> None:
    method = _method(estimator=estimator, local_stage=3)  # the digits net's first block: 32 channels, 8 x 8
    method.eval()
    images = torch.rand(4, 1, 8, 8)
    out = method.training_step(Batch.of(torch.arange(4), images))
    with torch.no_grad():
        maps = method.encoder.backbone.forward_maps(images, 3)
        assert maps.stages[0].shape == (4, 32, 8, 8)
        local = method.local_critic(maps.stages[0])
        g = method.global_critic(method.encoder(images))
        expected = loss(local_global_scores(g, local))  # type: ignore[operator]
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_a_stage_the_backbone_lacks_is_refused_in_one_line() -> None:
    with pytest.raises(
        ConfigError, match=r"dim.local_stage=4, but the backbone has 3 feature-map stage\(s\): give 1 to 3"
    ) as err:
        _method(local_stage=4)
    assert "\n" not in str(err.value)
