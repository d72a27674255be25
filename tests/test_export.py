from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from invprop.cli import main
from invprop.config import from_dict, preset, to_dict
from invprop.engine import save_checkpoint
from invprop.errors import ConfigError
from invprop.evaluation.export import export_weights, torchvision_model
from invprop.models import build_encoder


def fake_run(tmp_path: Path, backbone: str) -> Path:
    cfg = from_dict({"model": {"backbone": backbone}}, base=preset("cifar10"))
    encoder = build_encoder(backbone, "mlp", 128, in_channels=3)
    state = {"model": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}, "config": to_dict(cfg), "epoch": 3}
    save_checkpoint(state, tmp_path / "last.pt")
    return tmp_path / "last.pt"


@pytest.mark.parametrize("backbone,arch", [("resnet18", "resnet18"), ("resnet18_cifar", "resnet18")])
def test_torchvision_export_loads_strictly_and_computes_the_same_features(
    tmp_path: Path, backbone: str, arch: str
) -> None:
    ckpt = fake_run(tmp_path, backbone)
    path = export_weights(ckpt, "torchvision").path
    weights = torch.load(path, weights_only=True)
    assert not any(k.startswith("fc.") for k in weights)
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = torch.nn.Identity()
    if backbone.endswith("_cifar"):
        model = torchvision_model(backbone)
    model.load_state_dict(weights, strict=True)
    encoder = build_encoder(backbone, "mlp", 128)
    encoder.load_state_dict({k[len("encoder.") :]: v for k, v in torch.load(ckpt, weights_only=True)["model"].items()})
    x = torch.randn(2, 3, 32, 32)
    model.eval(), encoder.eval()
    torch.testing.assert_close(model(x), encoder.features(x))


def test_safetensors_export_holds_the_whole_encoder(tmp_path: Path) -> None:
    ckpt = fake_run(tmp_path, "small_convnet")
    tensors = load_file(str(export_weights(ckpt, "safetensors", tmp_path / "enc.safetensors").path))
    exported = build_encoder("small_convnet", "mlp", 128)
    exported.load_state_dict(tensors, strict=True)
    trained = build_encoder("small_convnet", "mlp", 128)
    trained.load_state_dict({k[len("encoder.") :]: v for k, v in torch.load(ckpt, weights_only=True)["model"].items()})
    x = torch.randn(4, 3, 32, 32)
    exported.eval(), trained.eval()
    torch.testing.assert_close(exported(x), trained(x))  # the same function, head included
    torch.testing.assert_close(exported.features(x), trained.features(x))


def test_export_refuses_what_it_cannot_promise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = fake_run(tmp_path, "small_convnet")
    with pytest.raises(ConfigError, match="no torchvision counterpart"):
        export_weights(ckpt, "torchvision")
    assert main(["-q", "export", "--checkpoint", str(ckpt), "--format", "torchvision"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_colour_split_encoder_exports_to_safetensors_only(tmp_path: Path) -> None:
    cfg = from_dict({"model": {"backbone": "resnet18_cifar", "colour_split": "lab"}}, base=preset("cifar10"))
    normalisation = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    encoder = build_encoder("resnet18_cifar", "mlp", 128, colour_split="lab", normalisation=normalisation)
    state = {"model": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}, "config": to_dict(cfg), "epoch": 1}
    save_checkpoint(state, tmp_path / "last.pt")
    for fmt in ("torchvision", "timm", "onnx"):
        with pytest.raises(ConfigError, match=f"one backbone per channel group .* no single {fmt} model"):
            export_weights(tmp_path / "last.pt", fmt)
    tensors = load_file(str(export_weights(tmp_path / "last.pt", "safetensors", tmp_path / "enc.safetensors").path))
    loaded = build_encoder("resnet18_cifar", "mlp", 128, colour_split="lab", normalisation=normalisation)
    loaded.load_state_dict(tensors, strict=True)  # both backbones and both heads, nothing else
