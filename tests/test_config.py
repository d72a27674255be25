from __future__ import annotations

import importlib.util
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
    from invprop.models import is_timm_backbone

    timm_installed = importlib.util.find_spec("timm") is not None
    for name in C.PRESETS:
        cfg = C.preset(name)
        if timm_installed or not is_timm_backbone(cfg.model.backbone):  # (test_timm_backbone checks cifar10-vit)
            C.validate(cfg)
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


def test_the_instance_classifier_warms_up_for_its_10_epochs_at_most_a_tenth_of_the_run() -> None:
    def warmup(method: str, epochs: int) -> int:
        return C.lr_plan(C.from_dict({"epochs": epochs}, base=C.preset("digits", method))).warmup_epochs

    assert warmup("invp", 100) == 0
    assert (warmup("instance-classifier", 100), warmup("instance-classifier", 30), warmup("instance-classifier", 800)) == (
        10, 3, 10)  # fmt: skip
    with pytest.raises(ConfigError, match="must be shorter than the run; it is 5 of 5 epochs"):
        C.validate(C.from_dict({"epochs": 5, "optim": {"warmup_epochs": 5, "warmup_share": 1.0}}))


def test_runs_of_earlier_versions_keep_their_default_warm_up() -> None:
    saved = C.to_dict(C.preset("digits", "instance-classifier"))
    saved["optim"]["warmup_epochs"] = None  # what earlier versions saved: "the method's default share"
    assert C.from_saved(saved).optim.warmup_epochs == 10
    invp = C.to_dict(C.preset("digits"))
    invp["optim"]["warmup_epochs"] = None
    assert C.from_saved(invp).optim.warmup_epochs == 0


def test_a_run_holds_only_its_own_methods_sections(tmp_path: Path) -> None:
    classifier = C.preset("digits", "instance-classifier")
    keys = C.to_dict(classifier)
    assert "classifier" in keys and "bank" not in keys and "loss" not in keys
    assert not any(key.startswith(("bank.", "loss.")) for key in C.help_texts(classifier))
    with pytest.raises(AttributeError, match="has no setting 'loss'"):
        classifier.loss
    with pytest.raises(
        ConfigError,
        match=r"loss\.\* belongs to method insdis, insdis-hard, invp, knn-positives, not to instance-classifier",
    ):
        C.from_dict({"loss": {"temperature": 0.2}}, base=classifier)
    invp = C.preset("digits")
    assert "classifier" not in C.to_dict(invp) and invp.loss.n_background == 1024
    # Switching between methods of the same sections keeps them; to another method's, its sections start fresh.
    assert C.from_dict({"method": "insdis"}, base=invp).loss.n_background == 1024
    assert C.from_dict({"method": "instance-classifier"}, base=invp).classifier.hard_classes == 100
    C.save_yaml(classifier, tmp_path / "c.yaml")
    assert C.from_dict(C.load_yaml(tmp_path / "c.yaml")) == classifier


def test_presets_compose_dataset_and_method_defaults() -> None:
    cifar100 = C.preset("cifar100")  # extends cifar10: its data, model and the method's cifar10 values, then its own
    assert (cifar100.data.name, cifar100.model.backbone, cifar100.loss.temperature, cifar100.loss.steps) == (
        "cifar100", "resnet18_cifar", 0.2, 4)  # fmt: skip
    mnist = C.preset("mnist")  # extends digits, but a 60k-image bank keeps N_b = 4096
    assert (mnist.epochs, mnist.optim.lr, mnist.loss.n_hard_positives, mnist.loss.n_background) == (50, 0.05, 20, 4096)
    assert C.preset_values("stl10")["loss"] == {"n_hard_positives": 20}
    assert C.preset("cifar10", "instance-classifier").optim.batch_size == 128


def test_allowed_values_come_from_the_registries() -> None:
    from invprop.models import HEADS

    with pytest.raises(
        ConfigError, match=f"model.head must be one of {', '.join(HEADS)}; got 'mpl' \\(did you mean mlp\\?\\)"
    ):
        C.validate(C.from_dict({"model": {"head": "mpl"}}))
    with pytest.raises(ConfigError, match="unknown method 'invpp' \\(did you mean invp\\?\\)"):
        C.from_dict({"method": "invpp"})
    assert "one of: identity, linear, mlp" in C.help_texts()["model.head"][1]


def test_a_range_says_the_same_in_the_settings_and_in_the_constructor() -> None:
    from invprop.core import MemoryBank

    with pytest.raises(ConfigError) as settings_error:
        C.validate(C.from_dict({"bank": {"momentum": 1.5}}))
    with pytest.raises(ValueError) as constructor_error:
        MemoryBank(10, 4, momentum=1.5)
    assert str(settings_error.value) == "bank.momentum must be in [0, 1), got 1.5"
    assert str(constructor_error.value) == "momentum must be in [0, 1), got 1.5"


def test_runs_saved_by_earlier_versions_still_load() -> None:
    saved = C.to_dict(C.preset("digits"))
    saved["distributed"]["bank"] = saved["bank"].pop("placement")  # the key's earlier home
    saved["distributed"]["bank"] = "sharded"
    saved["classifier"] = {"temperature": 0.2}  # earlier versions saved every method's sections
    cfg = C.from_saved(saved)
    assert cfg.bank.placement == "sharded" and "classifier" not in C.to_dict(cfg)
    old_classifier = {**C.to_dict(C.preset("digits", "instance-classifier")), "bank": {"momentum": 0.5}, "loss": {}}
    assert "bank" not in C.to_dict(C.from_saved(old_classifier))


@pytest.mark.parametrize("method", ["invp", "knn-positives", "insdis", "instance-classifier"])
def test_the_memory_bank_methods_and_the_classifier_differ_from_their_papers_in_the_head_only(method: str) -> None:
    library = C.provenance(C.from_dict({"method": method}))
    measured = [key for key, origin in library.items() if origin.reason and origin.reason != C.LIBRARY_DEFAULT]
    assert measured == ["model.head"]  # the one measured choice


def test_provenance_finds_an_unexplained_difference() -> None:
    origins = C.provenance(C.from_dict({"loss": {"temperature": 0.5}, "model": {"embedding_dim": 64}}))
    assert origins["loss.temperature"].reason == "" and origins["model.embedding_dim"].reason == ""
    assert "differs from" in origins["loss.temperature"].describe() and "no reason recorded" in origins[
        "loss.temperature"].describe()  # fmt: skip
    digits = C.provenance(C.preset("digits"), "digits")
    assert digits["loss.n_background"].reason and digits["loss.n_background"].reference.value == 4096
    assert digits["bank.num_neighbors"].reason is None and "as published (" in digits["bank.num_neighbors"].describe()


def test_library_defaults_pair_the_mlp_head_with_its_temperature() -> None:
    cfg = C.Config()
    assert (cfg.model.head, cfg.loss.temperature) == ("mlp_bn", 0.2)  # tau 0.2 goes with both MLP heads
