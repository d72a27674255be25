"""timm backbones (``model.backbone=timm:NAME``): a tiny model of each family -- a ViT, a ConvNeXt, a ResNet --
trains with InvP and BYOL, resumes exactly, and its ``--format timm`` export loads strictly into timm with equal
outputs; the settings that only timm backbones take, and their one-line errors."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from devices import DEVICES
from invprop.config import from_dict, input_needs, preset, validate
from invprop.errors import ConfigError, DataError
from invprop.methods import METHODS
from invprop.models import ModelSettings, TimmBackbone, TimmOptions, encoder_from
from invprop.models import timm_backbone as timm_module

timm = pytest.importorskip("timm")

#: family -> (backbone, model settings, the ``timm.create_model`` call the export must load into, written out).
FAMILIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "vit": ("timm:test_vit", {"patch_size": 4}, {"img_size": 32, "patch_size": 4}),
    "convnext": ("timm:test_convnext", {}, {}),
    "resnet": ("timm:test_resnet", {}, {}),
}
SIDE = 32


def _write_folder(root: Path, train: int = 4, test: int = 2) -> Path:
    """Two classes of random 32x32 colour images, ``train`` and ``test`` per class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _config(folder: Path, method: str, backbone: str, model: dict[str, Any], **extra: Any) -> Any:
    values = {
        "method": method, "epochs": 2, "seed": 0,
        "data": {"name": f"imagefolder:{folder}", "image_size": SIDE, "cache_dir": None},
        "model": {"backbone": backbone, **model},
        "optim": {"batch_size": 8},
    }  # fmt: skip
    for key, value in extra.items():
        if isinstance(value, dict):
            values.setdefault(key, {}).update(value)
        else:
            values[key] = value
    return from_dict(values)


@pytest.mark.parametrize("method", ["invp", "byol"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_tiny_model_of_each_family_trains_resumes_exactly_and_exports_strictly_to_timm(
    tmp_path: Path, family: str, method: str
) -> None:
    from invprop.evaluation.export import export_weights
    from invprop.evaluation.loading import load_eval_context
    from resume_check import assert_resumes_exactly

    backbone, model, create = FAMILIES[family]
    cfg = _config(_write_folder(tmp_path / "images"), method, backbone, model)
    state = assert_resumes_exactly(cfg, tmp_path)  # two steps: 8 images, batch 8, two epochs
    assert any(key.startswith("encoder.backbone.net.") for key in state)

    exported = export_weights(tmp_path / "full", "timm", tmp_path / "backbone.pth").path
    reference = timm.create_model(backbone.removeprefix("timm:"), num_classes=0, **create).eval()
    reference.load_state_dict(torch.load(exported), strict=True)
    ctx = load_eval_context(tmp_path / "full", overrides={"device": "cpu"})
    images = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        torch.testing.assert_close(ctx.encoder.features(images), reference(images), rtol=0, atol=0)

    from safetensors import safe_open

    whole = export_weights(tmp_path / "full", "safetensors", tmp_path / "encoder.safetensors").path
    with safe_open(str(whole), "pt") as handle:
        metadata = handle.metadata()
    created = json.loads(metadata["timm_create_model"])
    assert created == {
        "model_name": backbone.removeprefix("timm:"),
        "num_classes": 0,
        "in_chans": 3,
        **created_extra(create),
    }
    shape = json.loads(metadata["input"])
    assert (shape["in_channels"], shape["image_size"], len(shape["mean"]), len(shape["std"])) == (3, SIDE, 3, 3)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_a_vit_for_an_epoch(tmp_path: Path, method: str) -> None:
    from invprop.engine import Trainer

    folder = _write_folder(tmp_path / "images")
    small = {"small_crops": 2} if METHODS.get(method).multi_crop else {}
    few = {"deepcluster": {"deepcluster": {"clusters": 4}}, "pcl": {"pcl": {"clusters": [2, 4], "warmup_epochs": 0}},
           "sela": {"sela": {"clusters": 4}}, "deepercluster": {"deepercluster": {"super_clusters": 1, "clusters": 4}},
           "colorization-larsson": {"colorization_larsson": {"edge": 4}},
           "ijepa": {"ijepa": {"min_keep": 2}},  # the 8 x 8 grid's 3 x 3 blocks
           "distill": {"distill": {"teacher": "timm:test_resnet", "teacher_pretrained": False}}}  # fmt: skip
    spec = METHODS.get(method)
    split = {"colour_split": "lab"} if spec.colour_split else {}  # CMC: one ViT on L, one on ab
    staged = dict(spec.smoke.settings) if spec.stages else {}  # its smoke run gives each earlier stage one epoch
    epochs = len(spec.stages) or 1
    cfg = _config(folder, method, "timm:test_vit", {"patch_size": 4, **split}, data=small, epochs=epochs,
                  **{**staged, **few.get(method, {})})  # fmt: skip
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert np.isfinite(result.metrics["loss"]) and result.metrics["epochs"] == epochs


def created_extra(create: dict[str, Any]) -> dict[str, Any]:
    """The arguments a ViT built for small images adds to ``timm.create_model`` beside ``create``: it also takes
    other sides (interpolated position embeddings)."""
    return {**create, "dynamic_img_size": True} if "img_size" in create else {}


def test_a_vit_takes_smaller_crops_through_interpolated_position_embeddings() -> None:
    net = TimmBackbone("timm:test_vit", 3, SIDE, TimmOptions(patch_size=4)).eval()
    assert net.creation_kwargs["dynamic_img_size"] is True
    assert net(torch.randn(2, 3, 12, 12)).shape == (2, net.feature_dim)  # a multi-crop small crop: 3x3 patches


def test_feature_width_and_pooling_come_from_timm() -> None:
    token = TimmBackbone("timm:test_vit", 3, SIDE, TimmOptions(patch_size=4, global_pool="token")).eval()
    mean = TimmBackbone("timm:test_vit", 3, SIDE, TimmOptions(patch_size=4, global_pool="avg")).eval()
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        tokens = token.net.forward_features(x)  # (B, 1 + 64, D): the class token, then the patch tokens
        torch.testing.assert_close(token(x), tokens[:, 0])
        tokens = mean.net.forward_features(x)  # averaged pooling normalises after the mean (timm's fc_norm)
        torch.testing.assert_close(mean(x), mean.net.fc_norm(tokens[:, 1:].mean(dim=1)))
    assert token.feature_dim == timm.create_model("test_vit", num_classes=0).num_features
    convnext = encoder_from(ModelSettings(backbone="timm:test_convnext", head="linear"), in_channels=1)
    assert convnext.head.in_features == convnext.feature_dim == convnext.backbone.net.num_features


def test_a_vit_without_a_class_token_pools_its_final_normed_patch_tokens_and_exports_that_way() -> None:
    net = TimmBackbone("timm:test_vit", 3, SIDE, TimmOptions(patch_size=4, class_token=False)).eval()
    assert net.net.num_prefix_tokens == 0 and net.creation_kwargs["fc_norm"] is False
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        tokens = net.net.forward_features(x)  # (B, 64, D): patch tokens only, after the final norm
        assert tokens.shape[1] == (SIDE // 4) ** 2
        torch.testing.assert_close(net(x), tokens.mean(dim=1))
        twin = timm.create_model("test_vit", **net.creation_kwargs)  # what export --format timm prints
        twin.load_state_dict(net.net.state_dict(), strict=True)
        torch.testing.assert_close(twin.eval()(x), net(x))
    with pytest.raises(ConfigError, match="model.class_token=false leaves .* no class token to pool"):
        TimmBackbone("timm:test_vit", 3, SIDE, TimmOptions(patch_size=4, class_token=False, global_pool="token"))


def test_layer_decay_scales_each_layer_and_exempts_embeddings_and_norms_from_weight_decay() -> None:
    from invprop.engine.optimizer import LR_SCALE, parameter_groups

    encoder = encoder_from(ModelSettings(backbone="timm:test_vit", patch_size=4), 3, SIDE)
    groups = parameter_groups(encoder, weight_decay=0.1, layer_decay=0.5)
    names = {id(p): n for n, p in encoder.named_parameters()}
    where = {names[id(p)]: (g.get(LR_SCALE, 1.0), g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(where) == len(names)  # every trainable parameter, once
    depth = len(encoder.backbone.net.blocks)
    # timm's grouping: the embeddings are layer 0, block i is layer i + 1, the final norm joins the last block
    assert where["backbone.net.patch_embed.proj.weight"] == (0.5**depth, 0.1)
    assert where["backbone.net.blocks.0.attn.qkv.weight"] == (0.5 ** (depth - 1), 0.1)
    assert where[f"backbone.net.blocks.{depth - 2}.attn.qkv.weight"] == (0.5, 0.1)
    assert where[f"backbone.net.blocks.{depth - 1}.attn.qkv.weight"] == (1.0, 0.1)
    assert where["backbone.net.pos_embed"][1] == where["backbone.net.cls_token"][1] == 0.0
    assert where["backbone.net.blocks.0.norm1.weight"][1] == 0.0
    assert where["head.0.weight"] == (1.0, 0.1) and where["head.3.bias"] == (1.0, 0.0)  # the head: top, plain


@pytest.mark.parametrize("device", DEVICES)
def test_the_trainer_uses_adamw_and_the_layer_scaled_rates(tmp_path: Path, device: str) -> None:
    from invprop.engine import Trainer

    cfg = _config(
        _write_folder(tmp_path / "images"), "simclr", "timm:test_vit", {"patch_size": 4},
        optim={"optimizer": "adamw", "lr": 1e-3, "layer_decay": 0.5, "betas": [0.8, 0.95]},
    )  # fmt: skip
    cfg.device = device  # on CUDA: bf16 autocast and channels_last, the defaults there
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert np.isfinite(trainer.fit(stop_after=1).metrics["loss"])
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert {group["betas"] for group in trainer.optimizer.param_groups} == {(0.8, 0.95)}
    top = max(group["lr"] for group in trainer.optimizer.param_groups)
    rates = sorted({round(group["lr"] / top, 6) for group in trainer.optimizer.param_groups})
    depth = len(trainer.encoder.backbone.net.blocks)
    assert rates == [round(0.5**i, 6) for i in range(depth, -1, -1)]


def test_the_data_follow_the_model_metadata_for_folders_and_pretrained_weights() -> None:
    native = timm.get_pretrained_cfg("test_vit")
    random = input_needs(ModelSettings(backbone="timm:test_vit"))
    assert random.folder_size == native.input_size[-1] and random.normalization is None
    assert random.side_multiple == 16
    weights = input_needs(ModelSettings(backbone="timm:test_vit", pretrained=True, patch_size=4))
    assert weights.normalization == (tuple(native.mean), tuple(native.std)) and weights.side_multiple == 4
    assert input_needs(ModelSettings(backbone="timm:test_resnet")).side_multiple == 1
    assert input_needs(ModelSettings()).folder_size is None  # the registered backbones ask nothing


def test_an_image_folder_takes_the_model_side_when_image_size_is_null(tmp_path: Path) -> None:
    from invprop.config import data_for

    cfg = from_dict({"data": {"name": f"imagefolder:{_write_folder(tmp_path / 'images')}", "cache_dir": None},
                     "model": {"backbone": "timm:test_resnet"}})  # fmt: skip
    splits = data_for(cfg)
    assert splits.image_size == timm.get_pretrained_cfg("test_resnet").input_size[-1]
    assert splits.train[0][1].shape[-1] == splits.image_size


def test_small_crops_default_to_a_multiple_of_the_patch_and_refuse_other_sides(tmp_path: Path) -> None:
    from invprop.config import data_for

    folder = _write_folder(tmp_path / "images")
    cfg = _config(folder, "swav", "timm:test_vit", {"patch_size": 4}, data={"small_crops": 2})
    assert data_for(cfg).small_crops.size == 12  # SwAV's 96/224 of 32 pixels is 14; 12 is the nearest multiple of 4
    cfg = _config(folder, "swav", "timm:test_vit", {"patch_size": 4}, data={"small_crops": 2, "small_crop_size": 14})
    with pytest.raises(DataError, match="small_crop_size=14 is not a multiple of the encoder's patch side 4"):
        data_for(cfg)


def test_pretrained_weights_load_from_a_local_file(tmp_path: Path) -> None:
    source = timm.create_model("test_resnet")  # with its classifier, as a downloaded file holds it
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    net = TimmBackbone(
        "timm:test_resnet", options=TimmOptions(pretrained=True, pretrained_file=str(tmp_path / "weights.pth"))
    )
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert net.net.state_dict().keys() == expected.keys()
    assert all(torch.equal(net.net.state_dict()[k], v) for k, v in expected.items())


def test_pretrained_weights_offline_and_uncached_fail_at_once_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timm_module, "_reachable", lambda host: False)
    monkeypatch.setattr(timm_module, "_cached_weights", lambda timm, arch: None)
    with pytest.raises(ConfigError, match="not on this machine and huggingface.co cannot be reached.*pretrained_file"):
        TimmBackbone("timm:test_resnet", options=TimmOptions(pretrained=True))


@pytest.mark.parametrize(
    ("model", "optim", "message"),
    [
        ({"backbone": "timm:vit_tiny_patch16_22"}, {}, "timm has no model 'vit_tiny_patch16_22' \\(did you mean "
                                                      "vit_tiny_patch16_224\\?\\)"),
        ({"patch_size": 4}, {}, "model.patch_size applies to timm backbones"),
        ({"pretrained": True}, {}, "model.pretrained applies to timm backbones"),
        ({"class_token": False}, {}, "model.class_token applies to timm backbones"),
        ({}, {"layer_decay": 0.7}, "optim.layer_decay applies to timm backbones"),
        ({"backbone": "timm:test_vit"}, {"betas": [0.9]}, "optim.betas must be two numbers"),
        ({"backbone": "timm:test_vit", "pretrained_file": "w.pth"}, {}, None),
    ],
)  # fmt: skip
def test_settings_that_cannot_work_are_one_line_errors(model: dict[str, Any], optim: dict[str, Any],
                                                      message: str | None) -> None:  # fmt: skip
    cfg = from_dict({"model": model, "optim": optim})
    if message is None:
        validate(cfg)  # a file without pretrained is refused when the model is built, below
        with pytest.raises(ConfigError, match="model.pretrained_file is set but model.pretrained is false"):
            encoder_from(cfg.model, 3, SIDE)
        return
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_patch_sides_that_do_not_divide_the_images_and_patches_on_convnets_are_refused() -> None:
    with pytest.raises(ConfigError, match="cuts 40x40 images into 16x16 patches.*divisor of 40 \\(e.g. 20\\)"):
        encoder_from(ModelSettings(backbone="timm:test_vit"), 3, 40)
    with pytest.raises(ConfigError, match="timm:test_convnext has no patches"):
        encoder_from(ModelSettings(backbone="timm:test_convnext", patch_size=4), 3, SIDE)


def test_an_option_the_model_refuses_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="timm model test_vit does not take .*'global_pool': 'foo'.*pooling"):
        encoder_from(ModelSettings(backbone="timm:test_vit", patch_size=4, global_pool="foo"), 3, SIDE)


def test_without_timm_a_timm_backbone_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_timm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "timm" or name.startswith("timm."):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    monkeypatch.setattr(timm_module.importlib, "import_module", lambda name: no_timm(name))
    with pytest.raises(ConfigError, match=r"timm backbones need the timm package.*pip install 'invprop\[timm\]'"):
        validate(from_dict({"model": {"backbone": "timm:test_vit"}}))


def test_the_cli_refuses_an_unknown_timm_model_with_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from invprop.cli import main

    code = main(["train", "--set", "model.backbone=timm:convnext_atom", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean convnext_atto?" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_cifar10_vit_preset_builds_a_patch_4_vit_for_32_pixel_images() -> None:
    cfg = validate(preset("cifar10-vit", "simclr"))
    assert (cfg.optim.optimizer, cfg.optim.weight_decay, cfg.model.patch_size) == ("adamw", 0.1, 4)
    net = encoder_from(cfg.model, 3, 32).backbone
    assert net.net.patch_embed.grid_size == (8, 8) and net.feature_dim == 192
