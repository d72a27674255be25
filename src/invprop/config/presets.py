"""Presets: each dataset's shared settings, composed with each method's own defaults and its published training
recipe for that dataset, and the provenance of every setting that has a published value (``invprop presets --keys``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from invprop.config.schema import DEFAULT_METHOD, RECIPES, Config, from_dict, help_texts, method_spec
from invprop.errors import ConfigError
from invprop.settings import Reference, close_match, deep_update

#: Dataset presets: the shared settings of each (over the defaults), and the preset each extends. The methods add
#: their own defaults per preset (:attr:`invprop.methods.MethodSpec.presets`) and their published recipes
#: (:attr:`invprop.methods.MethodSpec.recipes`) along the same chain. The dataset presets' ``optim`` is the shared
#: recipe (``optim.recipe=shared``): InvP's authors' SGD. ``recipe: shared`` marks a preset whose ``optim`` applies
#: to every method whatever ``optim.recipe`` says (the ViT preset: no method publishes a ViT recipe for CIFAR).
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "epochs": 100,
        "data": {"name": "digits"},
        "optim": {"lr": 0.05},
    },
    "mnist": {
        "extends": "digits",
        "epochs": 50,
        "data": {"name": "mnist", "num_workers": 2},
        "optim": {"batch_size": 256},
    },
    "cifar10": {
        "data": {"name": "cifar10", "num_workers": 4},
        "model": {"backbone": "resnet18_cifar"},
    },
    "cifar100": {"extends": "cifar10", "data": {"name": "cifar100"}},
    "svhn": {"extends": "cifar10", "data": {"name": "svhn"}},
    "stl10": {
        "extends": "cifar10",
        "data": {"name": "stl10", "num_workers": 8},
        "model": {"backbone": "resnet18"},
        "optim": {"batch_size": 256},
    },
    "cifar10-vit": {
        "extends": "cifar10",
        "recipe": "shared",
        "epochs": 300,
        "model": {"backbone": "timm:vit_tiny_patch16_224", "patch_size": 4},
        "optim": {
            "optimizer": "adamw",
            "lr": 1.5e-4,
            "lr_scaling": "linear",
            "reference_batch": 256,
            "weight_decay": 0.1,
            "exclude_norm_and_bias": False,
            "batch_size": 256,
            "warmup_epochs": 40,
            "warmup_share": 0.14,
        },
    },  # fmt: skip
    "imagenet": {
        "data": {"name": "imagefolder:~/data/imagenet", "augment": "imagenet", "image_size": 224, "num_workers": 16},
        "model": {"backbone": "resnet50"},
        "optim": {"batch_size": 256, "weight_decay": 1e-4},
    },
}
#: Where the ViT recipe of ``cifar10-vit`` comes from: no paper publishes a ViT-on-CIFAR recipe for the methods here.
MOCO_V3_VIT = ("the ViT recipe of MoCo v3 (Chen, Xie & He, 2021, the authors' CONFIG.md) on ImageNet; each method "
               "keeps its settings of the cifar10 preset")  # fmt: skip
#: Why a preset's shared setting differs from a method's published value (the methods' own reasons, in
#: :attr:`invprop.methods.MethodSpec.deviations`, come first).
PRESET_REASONS: dict[str, dict[str, str]] = {
    "digits": {
        "epochs": "the digits job: 100 epochs of 1,347 images run in about a minute on a laptop CPU",
    },
    "mnist": {
        "epochs": "a CPU-sized schedule for 60,000 images",
        "optim.batch_size": "fewer steps per epoch on a CPU; not measured against 128",
    },
    "stl10": {"optim.batch_size": "105,000 images of 96 pixels, for a GPU; not measured against 128"},
    "cifar10-vit": {
        "model.backbone": "ViT-Tiny (5.5M parameters), the smallest ViT of timm's zoo (Touvron et al., 2021)",
        "model.patch_size": "4x4 patches on 32x32 images (64 tokens), as solo-learn's CIFAR ViT configs "
        "(scripts/pretrain/cifar/mae.yaml: vit_small, patch_size 4, img_size 32)",
        "optim.optimizer": f"AdamW, {MOCO_V3_VIT}",
        "epochs": f"300 epochs, {MOCO_V3_VIT}",
        "optim.lr": f"1.5e-4 x batch/256, {MOCO_V3_VIT}",
        "optim.weight_decay": f"0.1 (AdamW's, decoupled), {MOCO_V3_VIT}",
        "optim.exclude_norm_and_bias": f"weight decay on every parameter, {MOCO_V3_VIT}",
        "optim.batch_size": "256, the batch of the scaling rule lr = 1.5e-4 x batch/256 (MoCo v3 trains with 4,096 "
        "on many GPUs); not measured against other batches",
        "optim.warmup_epochs": f"40 warm-up epochs, {MOCO_V3_VIT}",
        "optim.warmup_share": "40 of MoCo v3's 300 epochs is 13%: a shorter run warms up for at most 14% of it",
        "optim.lr_scaling": f"1.5e-4 x batch/256, {MOCO_V3_VIT}",
        "optim.reference_batch": f"1.5e-4 x batch/256, {MOCO_V3_VIT}",
    },
}
#: Why the optimiser settings differ from a method's published recipe when a run asks for the shared one.
SHARED_RECIPE = ("optim.recipe=shared: every method trains with the dataset preset's optimiser settings (InvP's "
                 "authors' SGD), the one-recipe comparison of docs/results.md")  # fmt: skip
#: Why a key differs from its published value in a config built without a preset.
LIBRARY_DEFAULT = ("the library's default, in a configuration built without a preset; every preset gives the "
                   "method's value")  # fmt: skip
#: The keys of a dataset preset that are not settings.
_PRESET_KEYS = ("extends", "recipe")
#: The names of the presets (``digits``, the default, runs in about a minute on a laptop CPU).
PRESETS = tuple(DATASET_PRESETS)
DEFAULT_PRESET = "digits"


def chain(name: str) -> list[str]:
    """``name`` and the presets it extends, the most general first."""
    links = [name]
    while "extends" in DATASET_PRESETS[links[0]]:
        links.insert(0, DATASET_PRESETS[links[0]]["extends"])
    return links


def recipe_asked(*sources: Mapping[str, Any]) -> str:
    """The ``optim.recipe`` the last of ``sources`` (nested settings: a file, then overrides) that names one asks
    for; ``own`` by default."""
    recipe = "own"
    for values in sources:
        optim = values.get("optim")
        if isinstance(optim, Mapping) and isinstance(optim.get("recipe"), str):
            recipe = optim["recipe"]
    return recipe


def recipe_of(name: str, recipe: str = "own") -> str:
    """The recipe preset ``name`` gives: ``recipe``, unless the preset fixes the shared one (the ViT preset)."""
    return "shared" if any(DATASET_PRESETS[link].get("recipe") == "shared" for link in chain(name)) else recipe


def preset_values(name: str, method: str | None = None, recipe: str = "own") -> dict[str, Any]:
    """The nested values of preset ``name`` for ``method``: the dataset's shared settings along its chain, then --
    with ``recipe`` ``own`` -- the method's published recipe for the dataset (``"*"`` first), then the method's
    defaults (``"*"`` first), which adapt a recipe's value to a dataset where it does not fit, saying why in
    :attr:`invprop.methods.MethodSpec.deviations`."""
    if name not in DATASET_PRESETS:
        raise ConfigError(f"unknown preset {name!r}{close_match(name, PRESETS)}; choose one of: {', '.join(PRESETS)}")
    if recipe not in RECIPES:
        raise ConfigError(f"optim.recipe must be one of {', '.join(RECIPES)}; got {recipe!r}")
    method = method or DEFAULT_METHOD
    spec = method_spec(method)
    values: dict[str, Any] = {"method": method}
    links = chain(name)
    for link in links:
        deep_update(values, {k: v for k, v in DATASET_PRESETS[link].items() if k not in _PRESET_KEYS})
    recipe = recipe_of(name, recipe)
    if recipe == "own":
        for link in ["*", *links]:
            if link in spec.recipes:
                deep_update(values, {"optim": dict(spec.recipes[link].optim)})
    for link in ["*", *links]:
        deep_update(values, spec.presets.get(link, {}))
    deep_update(values, {"optim": {"recipe": recipe}})
    return values


def preset(name: str, method: str | None = None, recipe: str = "own") -> Config:
    """The configuration of preset ``name`` for ``method`` (default: InvP), with its own recipe or the shared one."""
    return from_dict(preset_values(name, method, recipe))


@dataclass(frozen=True)
class Provenance:
    """Where a setting's value comes from: its published value, and why the value differs from it, if it does.

    Attributes:
        value: the setting's value.
        reference: the published value and its source.
        reason: why ``value`` differs (None when it equals the reference; empty when nobody wrote why).
    """

    value: Any
    reference: Reference
    reason: str | None

    def describe(self) -> str:
        """One line for ``invprop presets --keys``."""
        ref = self.reference
        if self.reason is None:
            return f"as published ({ref.source})"
        why = self.reason or "no reason recorded"
        return f"differs from the published {ref.value!r} ({ref.source}): {why}"


def fields_by_key_of(values: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The dotted keys of nested ``values``."""
    keys: set[str] = set()
    for key, value in values.items():
        if isinstance(value, Mapping):
            keys |= fields_by_key_of(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def provenance(cfg: Config, preset_name: str | None = None) -> dict[str, Provenance]:
    """Every dotted key of ``cfg`` with a published value for its method, along preset ``preset_name``'s chain (None:
    the library defaults), with the reason for each difference."""
    spec = method_spec(cfg.method)
    links = ["*", *(chain(preset_name) if preset_name else [])]
    references: dict[str, Reference] = {}
    reasons: dict[str, str] = {}
    for link in links:
        recipe = spec.recipes.get(link)
        if recipe is not None:
            references.update({f"optim.{key}": Reference(value, recipe.source) for key, value in recipe.optim.items()})
        references.update(spec.references.get(link, {}))
        reasons.update(PRESET_REASONS.get(link, {}))
    if cfg.optim.recipe == "shared":
        reasons.update({key: SHARED_RECIPE for key in references if key.startswith("optim.")})
    if preset_name is None:  # what every preset's "*" layer sets differs from the bare defaults
        star = fields_by_key_of(spec.presets.get("*", {}))
        if "*" in spec.recipes:
            star |= {f"optim.{key}" for key in spec.recipes["*"].optim}
        reasons.update(dict.fromkeys(star, LIBRARY_DEFAULT))
    for link in links:
        reasons.update(spec.deviations.get(link, {}))
    values = help_texts(cfg)
    out: dict[str, Provenance] = {}
    for key, ref in references.items():
        value = values[key][0]
        out[key] = Provenance(value, ref, None if value == ref.value else reasons.get(key, ""))
    return out


__all__ = [
    "DATASET_PRESETS",
    "DEFAULT_PRESET",
    "LIBRARY_DEFAULT",
    "PRESETS",
    "PRESET_REASONS",
    "Provenance",
    "SHARED_RECIPE",
    "chain",
    "preset",
    "preset_values",
    "provenance",
    "recipe_asked",
    "recipe_of",
]
