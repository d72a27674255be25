"""Methods at unit scale for the tests that drive a method's steps by hand (the contract test's two-process and
accumulation tests, multi-crop's pairing): a BatchNorm-free encoder on 8 x 8 images, each method's own sections as
on digits with its smoke run's settings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from invprop.config import preset_values
from invprop.methods import METHODS, BuildContext, Method
from invprop.models import Encoder, FeatureMaps, ModelSettings, encoder_from
from invprop.models.colour_split import ColourSplitBackbone, GroupHeads
from invprop.models.feature_maps import sequential_maps
from invprop.settings import deep_update, merge

#: The unit-level setting of the two-process and accumulation tests: N images, embeddings of width D, 8x8 images.
N, D = 100, 8


class _Flatten(nn.Module):
    """A BatchNorm-free backbone: a 3x3 conv to a 4-channel map, then the map through one ReLU layer. Its two
    feature-map stages are that map twice (an identity between them), for the methods that read a stage before the
    last; one conv keeps the two-process test's float sums as short as a deeper net's would not. Smaller inputs
    (CPC's patches) are spread to 8 x 8 before the linear layer (on 8 x 8 inputs, an identity)."""

    feature_dim = 16
    stage_channels = (4, 4)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Identity(),
                                   nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(4 * 64, self.feature_dim),
                                   nn.ReLU())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def forward_maps(self, x: torch.Tensor, stages: int = 1) -> FeatureMaps:
        return sequential_maps(self.layer, (2, 3), x, stages)


def unit_method(name: str, distributed: bool = False, forward: Any = None) -> Method:
    """``name`` around a BatchNorm-free encoder, its own sections as on digits with its smoke run's settings, and
    the BatchNorm layers of the method (predictors, decoders) in eval mode: their statistics are per process by
    design."""
    spec = METHODS.get(name)
    torch.manual_seed(0)
    channels = 3 if spec.colour_only else 1
    values = preset_values("digits", name)
    split = values.get("model", {}).get("colour_split")
    if str(values.get("model", {}).get("backbone", "")).startswith("timm:"):  # a method that needs a ViT (MAE)
        vit = ModelSettings(backbone="timm:test_vit", patch_size=2, head="linear", embedding_dim=D)
        encoder = encoder_from(vit, channels, 8)
    elif split is None:
        encoder = Encoder(_Flatten(channels), nn.Linear(_Flatten.feature_dim, D))
    else:  # one small backbone and head per channel group (CMC)
        backbone = ColourSplitBackbone(split, _Flatten, (0.5,) * 3, (0.25,) * 3)
        encoder = Encoder(backbone, GroupHeads(backbone.group_dims, lambda width: nn.Linear(width, D)))
    own = {k: v for k, v in values.items() if k in spec.sections()}
    deep_update(own, {k: v for k, v in spec.smoke.settings.items() if k in spec.sections()})
    settings = spec.new_sections()
    merge(settings, own)
    spec.freeze_unused(encoder)
    features = torch.randn(N, D, generator=torch.Generator().manual_seed(3))
    context = BuildContext(
        N, D, distributed, channels, (0.5,) * channels, (0.25,) * channels, total_steps=10,
        features=lambda module: features, forward=forward(encoder) if forward is not None else None, image_size=8,
    )  # fmt: skip
    method = spec.create(settings, encoder, context)
    for module in method.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return method
