"""Feature maps (``forward_maps``) of every backbone: the pooled vector is the very one ``forward`` gave before, the
maps have the widths ``stage_channels`` says, a ViT's map is its patch tokens on their grid, and gradients reach
the backbone through a map."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from invprop.errors import ConfigError
from invprop.models import BACKBONES, EncodedMaps, build_backbone, build_encoder
from invprop.models.feature_maps import feature_maps

#: timm's tiny test models, one per family (model.patch_size for the ViT).
TIMM_FAMILIES = {"timm:test_vit": 4, "timm:test_convnext": None, "timm:test_resnet": None}
SIDE = 32


def _backbone(name: str) -> nn.Module:
    from invprop.models.timm_backbone import TimmOptions

    channels = 1 if name == "digits_convnet" else 3
    if name.startswith("timm:"):
        pytest.importorskip("timm")
        return build_backbone(name, channels, SIDE, TimmOptions(patch_size=TIMM_FAMILIES[name])).eval()
    return build_backbone(name, channels).eval()


def _images(name: str, batch: int = 2) -> torch.Tensor:
    side = 8 if name == "digits_convnet" else SIDE
    return torch.randn(
        batch, 1 if name == "digits_convnet" else 3, side, side, generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize("name", [*BACKBONES.names(), *TIMM_FAMILIES])
def test_every_backbone_gives_its_maps_and_the_same_pooled_numbers(name: str) -> None:
    torch.manual_seed(0)
    net, x = _backbone(name), _images(name)
    stages = len(net.stage_channels)
    with torch.no_grad():
        pooled = net(x)
        every = net.forward_maps(x, stages)
        last = net.forward_maps(x)
    assert torch.equal(every.pooled, pooled) and torch.equal(last.pooled, pooled)  # bitwise: the same pass
    assert len(every.stages) == stages and len(last.stages) == 1 and torch.equal(last.last, every.last)
    for found, width in zip(every.stages, net.stage_channels, strict=True):
        assert found.ndim == 4 and found.shape[:2] == (2, width)
    sides = [found.shape[-1] for found in every.stages]
    assert sides == sorted(sides, reverse=True)  # later stages are no larger


def test_the_resnet_pooled_vector_is_torchvisions_own() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet18").eval()
    reference = torchvision.models.resnet18(weights=None)
    reference.fc = nn.Identity()
    reference.load_state_dict(net.net.state_dict())
    x = _images("resnet18")
    with torch.no_grad():
        assert torch.equal(net.forward_maps(x, 4).pooled, reference.eval()(x))
        assert net.forward_maps(x, 4).last.shape == (2, 512, 1, 1)  # 32x32 through the ImageNet stem: 1x1


def test_a_vits_map_is_its_patch_tokens_on_their_grid() -> None:
    net = _backbone("timm:test_vit")
    captured: list[torch.Tensor] = []
    net.net.blocks[-1].register_forward_hook(lambda module, args, out: captured.append(out))
    x = _images("timm:test_vit")
    with torch.no_grad():
        found = net.forward_maps(x).last
    tokens = captured[0][:, net.net.num_prefix_tokens :]  # (B, h*w, C), the class token left out
    grid = SIDE // TIMM_FAMILIES["timm:test_vit"]
    for b in range(2):
        for i in range(grid):
            for j in range(grid):
                assert torch.equal(found[b, :, i, j], tokens[b, i * grid + j])


def test_gradients_reach_the_backbone_through_a_map() -> None:
    net = build_backbone("small_convnet")
    net.forward_maps(_images("small_convnet"), 2).stages[0].square().sum().backward()
    first, last = net.features[0].weight.grad, net.features[8].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert last is None  # the first of two stages asked for: the last stage took no part


def test_the_encoder_gives_maps_through_its_forward() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("digits_convnet", "mlp_bn", 16, in_channels=1).eval()
    x = _images("digits_convnet")
    with torch.no_grad():
        both = encoder(x, maps=2)
        plain = encoder(x)
    assert isinstance(both, EncodedMaps) and torch.equal(both.embedding, plain)
    assert [tuple(m.shape) for m in both.maps.stages] == [(2, 64, 4, 4), (2, 128, 4, 4)]


def test_asking_for_more_stages_than_there_are_says_so_in_one_line() -> None:
    net = build_backbone("digits_convnet", 1)
    with pytest.raises(ConfigError, match=r"digits_convnet has 3 feature-map stage\(s\); asked for the last 4") as err:
        net.forward_maps(_images("digits_convnet"), 4)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="gives no feature maps"):
        feature_maps(nn.Linear(2, 2), torch.zeros(1, 2))
