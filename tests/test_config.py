from __future__ import annotations

from pathlib import Path

import pytest

from invprop import config as C
from invprop.errors import ConfigError


def test_overrides_nested_and_typed() -> None:
    cfg = C.from_dict(C.parse_override("loss.temperature=0.2"), base=C.preset("digits"))
    cfg = C.from_dict(C.parse_override("bank.num_neighbors=5"), base=cfg)
    cfg = C.from_dict(C.parse_override("epochs=50"), base=cfg)
    assert (cfg.loss.temperature, cfg.bank.num_neighbors, cfg.epochs) == (0.2, 5, 50)
    assert cfg.data.name == "digits"
    assert C.from_dict({"loss": {"temperature": 1}}).loss.temperature == 1.0  # int accepted for float


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting loss.temprature \(did you mean loss.temperature\?\)"):
        C.from_dict(C.parse_override("loss.temprature=0.2"))


@pytest.mark.parametrize(
    "text,match",
    [
        ("epochs=many", "epochs must be an integer"),
        ("loss.exact=maybe", "loss.exact must be true or false"),
        ("optim=3", "optim must be a mapping"),
        ("novalue", "key=value"),
    ],
)
def test_wrong_types(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        C.from_dict(C.parse_override(text))


@pytest.mark.parametrize(
    "override,match",
    [
        ({"loss": {"temperature": 0}}, "temperature"),
        ({"bank": {"momentum": 1.0}}, "momentum"),
        ({"loss": {"steps": 0}}, "steps"),
        ({"loss": {"n_hard_positives": 0}}, "n_hard_positives"),
        ({"epochs": 0}, "epochs"),
        ({"loss": {"rampup": "linear"}}, "loss.rampup must be one of"),
        ({"bank": {"graph_update": "never"}}, "graph_update"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_validate_ranges(override: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        C.validate(C.from_dict(override))


def test_presets_are_valid_and_yaml_round_trips(tmp_path: Path) -> None:
    for name in C.PRESETS:
        C.validate(C.preset(name))
    imagenet = C.preset("imagenet")
    assert (imagenet.model.backbone, imagenet.loss.temperature, imagenet.optim.weight_decay) == ("resnet50", 0.2, 1e-4)
    path = tmp_path / "c.yaml"
    C.save_yaml(imagenet, path)
    assert C.from_dict(C.load_yaml(path)) == imagenet
    with pytest.raises(ConfigError, match="unknown preset"):
        C.preset("imagenett")


def test_every_key_has_help() -> None:
    for key, (_, text) in C.help_texts().items():
        assert text, f"{key} has no help text"


def test_bad_yaml_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        C.load_yaml(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        C.load_yaml(tmp_path / "missing.yaml")


def test_warmup_defaults_to_a_tenth_for_the_instance_classifier_only() -> None:
    from invprop.config import from_dict, preset, warmup_epochs

    assert warmup_epochs(preset("digits")) == 0
    assert warmup_epochs(from_dict({"method": "instance-classifier"}, base=preset("digits"))) == 10  # 100 epochs
    assert warmup_epochs(from_dict({"method": "instance-classifier", "epochs": 30}, base=preset("digits"))) == 3
    assert warmup_epochs(from_dict({"method": "instance-classifier", "optim": {"warmup_epochs": 0}}, base=preset("digits"))) == 0
