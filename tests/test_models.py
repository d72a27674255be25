from __future__ import annotations

import pytest
import torch
import torchvision

from invprop.models import BACKBONES, HEADS, build_encoder
from invprop.registry import UnknownNameError


def test_digits_encoder_shapes() -> None:
    enc = build_encoder("digits_convnet", "mlp", 128, in_channels=1)
    x = torch.randn(5, 1, 8, 8)
    assert enc(x).shape == (5, 128)
    assert enc.features(x).shape == (5, enc.feature_dim)
    assert build_encoder("digits_convnet", "linear", 64, in_channels=1)(torch.randn(2, 1, 28, 28)).shape == (2, 64)


def test_cifar_resnet_stem_and_torchvision_compatibility() -> None:
    enc = build_encoder("resnet18_cifar", "mlp", 128)
    assert enc.backbone.net.conv1.kernel_size == (3, 3) and enc.backbone.net.conv1.stride == (1, 1)
    assert isinstance(enc.backbone.net.maxpool, torch.nn.Identity)
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    plain = build_encoder("resnet18", "linear", 128)
    reference = torchvision.models.resnet18(weights=None)
    reference.fc = torch.nn.Identity()
    reference.load_state_dict(plain.backbone.net.state_dict(), strict=True)


def test_mlp_head_hidden_width_defaults_to_feature_width() -> None:
    for name in ("mlp", "mlp_bn"):
        assert HEADS.get(name)(512, 128)[0].out_features == 512


def test_the_authors_mlp_head_has_no_batchnorm_and_mlp_bn_has_one() -> None:
    kinds = {name: [type(m).__name__ for m in HEADS.get(name)(64, 16, 32)] for name in ("mlp", "mlp_bn")}
    assert kinds == {"mlp": ["Linear", "ReLU", "Linear"], "mlp_bn": ["Linear", "BatchNorm1d", "ReLU", "Linear"]}
    x = torch.randn(1, 64)  # a batch of one: fine without BatchNorm, which needs more than one value per channel
    assert HEADS.get("mlp")(64, 16).train()(x).shape == (1, 16)


def test_an_earlier_versions_mlp_head_is_read_as_mlp_bn() -> None:
    from invprop.config import BATCHNORM_HEAD_KEY, from_saved

    saved = {"model": {"backbone": "digits_convnet", "head": "mlp"}}
    assert from_saved(saved).model.head == "mlp"
    assert from_saved(saved, {BATCHNORM_HEAD_KEY: torch.zeros(3)}).model.head == "mlp_bn"
    encoder = build_encoder("digits_convnet", "mlp_bn", 16, in_channels=1)
    assert BATCHNORM_HEAD_KEY.removeprefix("encoder.") in encoder.state_dict()


def test_registry_errors_suggest_names() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        BACKBONES.get("resnet81")
    assert {"digits_convnet", "resnet18_cifar", "resnet18", "resnet50"} <= set(BACKBONES.names())


def test_small_convnet_maps_32x32_colour_images_to_features() -> None:
    enc = build_encoder("small_convnet", "mlp", 32, in_channels=3)
    assert enc(torch.randn(4, 3, 32, 32)).shape == (4, 32)
    assert enc.features(torch.randn(4, 3, 32, 32)).shape == (4, enc.feature_dim)
    # Much smaller than ResNet-18 (CIFAR stem), which is what makes CPU experiments on CIFAR feasible.
    small = sum(p.numel() for p in enc.backbone.parameters())
    resnet = sum(p.numel() for p in build_encoder("resnet18_cifar", "mlp", 32).backbone.parameters())
    assert small * 10 < resnet


def test_head_layers_split_at_each_linear_and_share_the_heads_modules() -> None:
    from invprop.models.heads import head_layers

    head = HEADS.get("mlp3_bn_out")(8, 4, 6)
    layers = head_layers(head)
    assert [type(m).__name__ for m in layers[0]] == ["Linear", "BatchNorm1d", "ReLU"]
    assert [type(m).__name__ for m in layers[2]] == ["Linear", "BatchNorm1d"]
    assert layers[0][0] is head[0][0]
    head.eval()
    x = torch.randn(5, 8)
    torch.testing.assert_close(torch.nn.Sequential(*layers)(x), head(x))
    assert len(head_layers(HEADS.get("linear")(8, 4))) == 1


def test_from_head_layer_moves_the_first_layers_into_the_features() -> None:
    from invprop.errors import ConfigError
    from invprop.models import from_head_layer

    encoder = build_encoder("digits_convnet", "mlp3_bn_out", 16, hidden_dim=32, in_channels=1).eval()
    x = torch.rand(3, 1, 8, 8)
    cut = from_head_layer(encoder, 1)
    assert cut.feature_dim == 32
    torch.testing.assert_close(
        cut.features(x), encoder.head[0][2](encoder.head[0][1](encoder.head[0][0](encoder.features(x))))
    )
    torch.testing.assert_close(cut(x), encoder(x))  # the embedding is unchanged
    assert from_head_layer(encoder, 0) is encoder
    assert from_head_layer(encoder, 3).feature_dim == 16
    with pytest.raises(ConfigError, match="the head has 3 layer"):
        from_head_layer(encoder, 4)


def test_simclr_v2s_projector_has_no_bias_and_no_shift_in_its_last_layer() -> None:
    head = HEADS.get("mlp3_bn_scaled")(8, 4)
    last_linear, last_norm = head[6], head[7]
    assert last_linear.bias is None and not last_norm.bias.requires_grad
    head.train()
    out = head(torch.randn(16, 8) * 3 + 1)
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(4), atol=1e-5, rtol=0)  # scaled, not shifted
    last_norm.weight.data.fill_(2.0)
    last_norm.reset_parameters()
    assert torch.equal(last_norm.bias, torch.zeros(4)) and torch.equal(last_norm.weight, torch.ones(4))
