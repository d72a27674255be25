"""Each method's published recipe (``MethodSpec.recipes``, built from ``invprop.methods.recipes``): applied by the
presets unless ``optim.recipe=shared``, adapted by a method's preset only with a reason, shown with its source, and
scaled to the run's batch."""

from __future__ import annotations

import math

import pytest

from invprop import config as C
from invprop.config.presets import SHARED_RECIPE, chain
from invprop.methods import METHODS

#: Presets whose chain holds every recipe key the methods use ("*" and the CIFAR-sized presets).
_PRESETS = ("imagenet", "cifar10", "digits")


def _expected_optim(method: str, name: str) -> dict:
    """The recipe values of ``method`` along preset ``name``'s chain, ``"*"`` first, written out from its spec."""
    spec = METHODS.get(method)
    expected: dict = {}
    for link in ["*", *chain(name)]:
        if link in spec.recipes:
            expected.update(spec.recipes[link].optim)
    return expected


@pytest.mark.parametrize("name", _PRESETS)
@pytest.mark.parametrize("method", [m for m in METHODS if METHODS.get(m).recipes])
def test_every_recipe_value_reaches_the_preset_or_says_why_not(method: str, name: str) -> None:
    cfg = C.preset(name, method)
    origins = C.provenance(cfg, name)
    for key, published in _expected_optim(method, name).items():
        value = getattr(cfg.optim, key)
        value = list(value) if isinstance(value, tuple) else value
        origin = origins[f"optim.{key}"]
        if value != published:  # a preset adapted it: only with its reason
            assert origin.reason, f"{method} on {name}: optim.{key} is {value!r}, published {published!r}, no reason"
        assert origin.reference.value == published


def test_vicreg_on_cifar_trains_with_solo_learns_lars_and_the_shared_recipe_gives_the_presets_sgd() -> None:
    own = C.preset("cifar10", "vicreg")
    o = own.optim
    assert (o.optimizer, o.lr, o.lr_scaling, o.reference_batch, o.lars_eta, o.lars_clip, o.exclude_norm_and_bias) == (
        "lars", 0.3, "linear", 256, 0.02, True, True)  # fmt: skip
    assert (o.weight_decay, o.warmup_epochs, o.warmup_start_lr, o.schedule) == (1e-4, 10, 3e-5, "cosine")
    plan = C.lr_plan(C.from_dict({"epochs": 30, "optim": {"batch_size": 128}}, base=own))
    assert plan.peak == pytest.approx(0.15) and plan.warmup_epochs == 3  # 0.3 x 128/256; 10 capped at 30/10
    shared = C.to_dict(C.preset("cifar10", "vicreg", "shared"))["optim"]
    assert shared == C.to_dict(C.preset("cifar10", "invp", "shared"))["optim"]  # InvP's authors' SGD for everyone
    assert shared["optimizer"] == "sgd" and shared["recipe"] == "shared"
    origins = C.provenance(C.preset("cifar10", "vicreg", "shared"), "cifar10")
    assert origins["optim.optimizer"].reason == SHARED_RECIPE


def test_an_explicit_lr_wins_over_the_recipe_and_is_scaled_by_its_rule() -> None:
    cfg = C.from_dict({"optim": {"lr": 0.1, "batch_size": 512}}, base=C.preset("cifar10", "simclr"))
    assert cfg.optim.lr == 0.1 and C.lr_plan(cfg).peak == pytest.approx(0.2)  # solo-learn's linear rule from 256
    sqrt = C.from_dict({"optim": {"lr_scaling": "sqrt"}}, base=cfg)
    assert C.lr_plan(sqrt).peak == pytest.approx(0.1 * math.sqrt(2))
    none = C.from_dict({"optim": {"lr_scaling": "none"}}, base=cfg)
    assert C.lr_plan(none).peak == 0.1


def test_colorization_scales_the_authors_lr_from_their_batch_on_cifar_only_and_says_why() -> None:
    cifar = C.preset("cifar10", "colorization")
    assert (cifar.optim.optimizer, cifar.optim.lr, cifar.optim.reference_batch, cifar.optim.lr_scaling) == (
        "adam", 3e-5, 40, "linear")  # fmt: skip
    peak = C.lr_plan(C.from_dict({"optim": {"batch_size": 128}}, base=cifar)).peak
    assert peak == pytest.approx(9.6e-5)  # the run of docs/results.md
    origin = C.provenance(cifar, "cifar10")["optim.lr_scaling"]
    assert origin.reference.value == "none" and "0.3536" in origin.reason and "0.3768" in origin.reason
    assert C.preset("cifar100", "colorization").optim.lr_scaling == "linear"  # extends cifar10
    imagenet = C.preset("imagenet", "colorization").optim
    assert (imagenet.lr_scaling, imagenet.reference_batch) == ("none", 40)  # the authors' own, unscaled
    assert C.preset("cifar10", "colorization", "shared").optim.optimizer == "sgd"
