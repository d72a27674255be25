"""A run's settings: the shared sections, plus the sections of its method -- and presets that compose them.

A run's :class:`Config` holds the run-level keys (``method``, ``epochs``, ``seed``, ``device``, ...), the shared
sections -- ``data`` (:class:`invprop.data.DataSettings`), ``model`` (:class:`invprop.models.ModelSettings`),
``optim``, ``eval`` and ``distributed`` -- and only its own method's sections, declared and registered with the
method (:data:`invprop.methods.METHODS`): InvP's ``bank`` and ``loss``, the instance classifier's ``classifier``.
Every field carries its help, its range and its allowed values (:mod:`invprop.settings`).

Sources, later ones winning: the defaults, a preset (dataset defaults, then the method's defaults for that dataset),
a YAML file, ``--set key=value`` overrides with dotted keys, and the CLI's own flags. :func:`validate` checks every
range and choice before any work.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, get_type_hints

import torch
import yaml
from torch import nn

from invprop.data import DataSettings, DataSplits, InputNeeds, datasets_from
from invprop.distributed.collectives import BACKENDS
from invprop.errors import ConfigError
from invprop.files import write_text_atomically
from invprop.methods import METHODS, BuildContext, Method, MethodSpec
from invprop.models import ModelSettings, check_model_settings, is_timm_backbone, model_input
from invprop.models.timm_backbone import patch_side
from invprop.optimizers import OPTIMIZERS
from invprop.schedules import SCHEDULES
from invprop.settings import (
    AT_LEAST_ONE,
    AT_LEAST_TWO,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    Range,
    Reference,
    check,
    check_value,
    close_match,
    coerce,
    deep_update,
    describe_field,
    fields_by_key,
    is_resumable,
    is_section,
    load_yaml,
    merge,
    parse_override,
    section,
    setting,
)
from invprop.settings import (
    help_texts as section_help,
)

#: Mixed-precision modes: the autocast dtype of each (None = fp32); ``auto`` is bf16 on CUDA and fp32 on the CPU.
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
PRECISIONS = ("auto", *AUTOCAST_DTYPES)
DEFAULT_METHOD = "invp"


@dataclass
class OptimSettings:
    """The ``optim`` section: the optimiser and its learning-rate schedule."""

    optimizer: str = setting("sgd", "optimiser: sgd (with momentum) or adamw (the ViT recipes')", choices=OPTIMIZERS)
    lr: float = setting(0.03, "base learning rate", bounds=POSITIVE)
    momentum: float = setting(0.9, "SGD momentum", bounds=UNIT_INTERVAL)
    betas: list[float] = setting(None, "AdamW's beta1 and beta2", bounds=UNIT_INTERVAL, factory=lambda: [0.9, 0.999])
    layer_decay: float = setting(
        1.0, "timm backbones: layer-wise learning-rate decay, each layer's rate times this per layer from the top "
        "(the ViT fine-tuning recipes: 0.65-0.75; 1 = none)", bounds=Range(gt=0, le=1),
    )  # fmt: skip
    weight_decay: float = setting(
        5e-4, "weight decay (not applied to norm layers, biases, nor a ViT's position embeddings and class token)",
        bounds=NON_NEGATIVE,
    )  # fmt: skip
    batch_size: int = setting(
        128, "images per step, summed over all processes of a distributed run (the global batch)", bounds=AT_LEAST_TWO
    )
    schedule: str = setting("cosine", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: int | None = setting(
        None, "linear warm-up epochs; null = the method's default (10% of the epochs, at most 10, for the instance "
        "classifier; none for the memory-bank methods)", bounds=NON_NEGATIVE,
    )  # fmt: skip
    milestones: list[int] | None = setting(None, "epochs at which the step schedule decays (default: 50%, 75%, 87.5%)")
    gamma: float = setting(0.1, "decay factor of the step schedule", bounds=POSITIVE)


@dataclass
class EvalSettings:
    """The ``eval`` section: the kNN monitor and the fine-tuning protocols."""

    knn_k: int = setting(
        200, "K of the weighted kNN monitor (capped at the training set size)", bounds=AT_LEAST_ONE, resumable=True
    )
    knn_sigma: float = setting(0.07, "sigma of the weighted kNN monitor", bounds=POSITIVE, resumable=True)
    every: int = setting(
        1, "run the kNN monitor every this many epochs (and after the last)", bounds=AT_LEAST_ONE, resumable=True
    )
    finetune_epochs: int = setting(
        30,
        "epochs of fine-tuning in the semi and transfer protocols (pretrained and scratch alike)",
        bounds=AT_LEAST_ONE,
        resumable=True,
    )
    finetune_lr: float = setting(
        0.002, "SGD learning rate of fine-tuning (cosine schedule, momentum 0.9)", bounds=POSITIVE, resumable=True
    )
    finetune_batch_size: int = setting(
        64, "images per fine-tuning step (capped at the labelled subset size)", bounds=AT_LEAST_TWO, resumable=True
    )


@dataclass
class DistributedSettings:
    """The ``distributed`` section: how the processes of a torchrun job work together."""

    sync_bn: bool = setting(False, "convert BatchNorm layers to SyncBatchNorm (CUDA only) in a multi-process run")
    backend: str = setting("auto", "torch.distributed backend (auto: nccl on CUDA, gloo on the CPU)", choices=BACKENDS,
                      resumable=True)  # fmt: skip
    timeout_minutes: int = setting(
        60,
        "how long a process waits for the others at a collective (e.g. during evaluation)",
        bounds=AT_LEAST_ONE,
        resumable=True,
    )


#: The run-level keys and the shared sections, in the order config.yaml lists them (the method's sections come after
#: ``model``).
_HEAD = ("method", "epochs", "seed", "device", "precision", "channels_last", "compile", "data", "model")


@dataclass
class Config:
    """The settings of one run: the shared sections and ``method_settings``, the method's own sections.

    The method's sections read like the others (``cfg.loss.temperature``); a run of another method has none of them.
    Build one with :func:`from_dict` or :func:`preset`.
    """

    method: str = setting(DEFAULT_METHOD, "training objective", choices=METHODS)
    epochs: int = setting(800, "total epochs of the schedule", bounds=AT_LEAST_ONE, resumable=True)
    seed: int = setting(0, "random seed (data order, augmentation, initialisation)")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", resumable=True)
    precision: str = setting(
        "auto", "mixed precision (auto: bf16 autocast on CUDA, fp32 on the CPU)", choices=PRECISIONS
    )
    channels_last: bool = setting(True, "channels_last memory format on CUDA", resumable=True)
    compile: bool = setting(
        False, "torch.compile the encoder's forward (slower start, faster steps on CUDA)", resumable=True
    )
    data: DataSettings = section(DataSettings, "the images")
    model: ModelSettings = section(ModelSettings, "the encoder")
    optim: OptimSettings = section(OptimSettings, "the optimiser")
    eval: EvalSettings = section(EvalSettings, "evaluation")
    distributed: DistributedSettings = section(DistributedSettings, "multi-process runs")
    method_settings: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.method_settings is None:
            self.method_settings = method_spec(self.method).settings()

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: the method's sections (``cfg.loss``, ``cfg.classifier``, ...).
        settings = self.__dict__.get("method_settings")
        if settings is not None and not name.startswith("__") and name in _field_names(settings):
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__} of method {self.__dict__.get('method')!r} has no setting {name!r}")


_HINTS = get_type_hints(Config)


def _field_names(settings: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(settings)]


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``; a one-line error naming the choices (and the closest) otherwise."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}{close_match(name, METHODS)}; choose one of: {', '.join(METHODS)}")
    return METHODS.get(name)


def sections(cfg: Config) -> list[tuple[str, Any]]:
    """``(name, value)`` of every top-level key, the method's sections included, in config.yaml's order."""
    shared = [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name != "method_settings"]
    own = [(name, getattr(cfg.method_settings, name)) for name in _field_names(cfg.method_settings)]
    head = [item for item in shared if item[0] in _HEAD]
    return head + own + [item for item in shared if item[0] not in _HEAD]


def to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain values: the run-level keys, the shared sections and the method's own sections."""
    return {name: dataclasses.asdict(value) if is_section(value) else value for name, value in sections(cfg)}


def _owners(section_name: str) -> list[str]:
    return [name for name in METHODS if section_name in METHODS.get(name).sections()]


def _merge(cfg: Config, values: Mapping[str, Any]) -> None:
    """Apply nested ``values`` (``method`` aside) to ``cfg``: shared keys and the method's own sections."""
    own = _field_names(cfg.method_settings)
    for key, value in values.items():
        if key == "method":
            continue
        if key in own:
            merge(getattr(cfg.method_settings, key), value, f"{key}.")
        elif key in _HINTS and key != "method_settings":
            current = getattr(cfg, key)
            if is_section(current):
                merge(current, value, f"{key}.")
            else:
                setattr(cfg, key, coerce(value, _HINTS[key], key))
        else:
            owners = _owners(str(key))
            if owners:
                raise ConfigError(
                    f"{key}.* belongs to method {', '.join(owners)}, not to {cfg.method}; set method first, or drop {key}"
                )
            known = [name for name, _ in sections(cfg)]
            raise ConfigError(f"unknown setting {key}{close_match(str(key), known)}")


def from_dict(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """A config from nested ``values`` applied over ``base`` (default: the library defaults).

    A ``method`` in ``values`` that differs from ``base``'s keeps the shared sections and starts the method's
    sections from their defaults (unless both methods have the same sections, e.g. invp and insdis).
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"configuration must be a mapping, got {values!r}")
    method = values.get("method", base.method if base is not None else DEFAULT_METHOD)
    if not isinstance(method, str):
        raise ConfigError(f"method must be a str, got {method!r}")
    spec = method_spec(method)
    cfg = Config(method=method)
    if base is not None:
        shared = {
            name: value for name, value in to_dict(base).items() if name not in _field_names(base.method_settings)
        }
        shared.pop("method")
        _merge(cfg, shared)
        if type(base.method_settings) is spec.settings:
            cfg.method_settings = copy.deepcopy(base.method_settings)
    _merge(cfg, values)
    return cfg


#: Dataset presets: the shared settings of each (over the defaults), and the preset each extends. The methods add
#: their own defaults per preset (:attr:`invprop.methods.MethodSpec.presets`) along the same chain.
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
        "epochs": 300,
        "model": {"backbone": "timm:vit_tiny_patch16_224", "patch_size": 4},
        "optim": {"optimizer": "adamw", "lr": 1.5e-4, "weight_decay": 0.1, "batch_size": 256, "warmup_epochs": 40},
    },
    "imagenet": {
        "data": {"name": "imagefolder:~/data/imagenet", "augment": "imagenet", "image_size": 224, "num_workers": 16},
        "model": {"backbone": "resnet50"},
        "optim": {"batch_size": 256, "weight_decay": 1e-4},
    },
}
#: Where the ViT recipe of ``cifar10-vit`` comes from: no paper publishes a ViT-on-CIFAR recipe for the methods here.
MOCO_V3_VIT = ("the ViT recipe of MoCo v3 (Chen, Xie & He, 2021, Sec. 4 and its README) on ImageNet; each method "
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
        "optim.batch_size": "256, the batch of the scaling rule lr = 1.5e-4 x batch/256 (MoCo v3 trains with 4,096 "
        "on many GPUs); not measured against other batches",
        "optim.warmup_epochs": f"40 warm-up epochs, {MOCO_V3_VIT}",
    },
}
#: The names of the presets (``digits``, the default, runs in about a minute on a laptop CPU).
PRESETS = tuple(DATASET_PRESETS)
DEFAULT_PRESET = "digits"


def _chain(name: str) -> list[str]:
    """``name`` and the presets it extends, the most general first."""
    chain = [name]
    while "extends" in DATASET_PRESETS[chain[0]]:
        chain.insert(0, DATASET_PRESETS[chain[0]]["extends"])
    return chain


def preset_values(name: str, method: str | None = None) -> dict[str, Any]:
    """The nested values of preset ``name`` for ``method``: the dataset's shared settings along its chain, then the
    method's defaults for each preset of the chain."""
    if name not in DATASET_PRESETS:
        raise ConfigError(f"unknown preset {name!r}{close_match(name, PRESETS)}; choose one of: {', '.join(PRESETS)}")
    method = method or DEFAULT_METHOD
    spec = method_spec(method)
    values: dict[str, Any] = {"method": method}
    chain = _chain(name)
    for link in chain:
        deep_update(values, {k: v for k, v in DATASET_PRESETS[link].items() if k != "extends"})
    for link in chain:
        deep_update(values, spec.presets.get(link, {}))
    return values


def preset(name: str, method: str | None = None) -> Config:
    """The configuration of preset ``name`` for ``method`` (default: InvP)."""
    return from_dict(preset_values(name, method))


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


def provenance(cfg: Config, preset_name: str | None = None) -> dict[str, Provenance]:
    """Every dotted key of ``cfg`` with a published value for its method, along preset ``preset_name``'s chain (None:
    the library defaults), with the reason for each difference."""
    spec = method_spec(cfg.method)
    links = ["*", *(_chain(preset_name) if preset_name else [])]
    references: dict[str, Reference] = {}
    reasons: dict[str, str] = {}
    for link in links:
        references.update(spec.references.get(link, {}))
        reasons.update(PRESET_REASONS.get(link, {}))
    for link in links:
        reasons.update(spec.deviations.get(link, {}))
    values = help_texts(cfg)
    out: dict[str, Provenance] = {}
    for key, ref in references.items():
        value = values[key][0]
        out[key] = Provenance(value, ref, None if value == ref.value else reasons.get(key, ""))
    return out


#: Keys of earlier versions, as ``(old section, old key) -> (new section, new key)``, upgraded when a saved run's
#: settings are read.
RENAMED = {("distributed", "bank"): ("bank", "placement")}


#: A parameter only the ``mlp_bn`` head has: runs of earlier versions saved that head under the name ``mlp``.
BATCHNORM_HEAD_KEY = "encoder.head.1.running_mean"


def for_method(values: Mapping[str, Any], method: str) -> dict[str, Any]:
    """``values`` (nested settings) without ``method`` and without the sections that only other methods have, so
    one file or one set of overrides can serve several methods (``invprop compare``).

    Example:
        >>> sorted(for_method({"method": "invp", "loss": {"weight": 1}, "optim": {"lr": 0.1}}, "simclr"))
        ['optim']
    """
    own = method_spec(method).sections()
    return {k: v for k, v in values.items() if k != "method" and (k in own or not _owners(str(k)))}


def from_saved(values: Mapping[str, Any], weights: Mapping[str, Any] | None = None) -> Config:
    """The config of a saved run (config.yaml, or a checkpoint's ``config``), including runs of earlier versions,
    which saved every method's sections and a few keys under other names.

    ``weights``, the checkpoint's model state, tells an earlier version's ``mlp`` head (which had a BatchNorm, now
    ``mlp_bn``) from the authors' head that ``mlp`` names now.
    """
    values = {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}
    model = values.get("model")
    if isinstance(model, dict) and model.get("head", "mlp") == "mlp" and weights and BATCHNORM_HEAD_KEY in weights:
        model["head"] = "mlp_bn"
    for (old_section, old_key), (new_section, new_key) in RENAMED.items():
        if old_key in values.get(old_section, {}):
            moved = values[old_section].pop(old_key)
            if isinstance(values.get(new_section), dict):
                values[new_section].setdefault(new_key, moved)
    own = method_spec(values.get("method", DEFAULT_METHOD)).sections()
    for name in [k for k in values if k not in own and _owners(k)]:
        del values[name]  # another method's section, saved by an earlier version
    return from_dict(values)


def validate(cfg: Config) -> Config:
    """Check every range and choice; raises :class:`ConfigError` with a one-line message. Returns ``cfg``."""
    for f in dataclasses.fields(cfg):
        if f.name != "method_settings" and not is_section(getattr(cfg, f.name)):
            check_value(f, getattr(cfg, f.name), f.name)
    for name, value in sections(cfg):
        if is_section(value):
            check(value, f"{name}.")
    warmup = cfg.optim.warmup_epochs
    if warmup is not None and warmup >= cfg.epochs:
        raise ConfigError(f"optim.warmup_epochs must be in [0, epochs), got {warmup}")
    if not (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda")):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {cfg.device!r}")
    check_model_settings(cfg.model)
    if cfg.optim.layer_decay != 1.0 and not is_timm_backbone(cfg.model.backbone):
        raise ConfigError(
            f"optim.layer_decay applies to timm backbones (model.backbone=timm:NAME), not {cfg.model.backbone}; "
            "set it to 1"
        )
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers [beta1, beta2], got {cfg.optim.betas}")
    if cfg.data.small_crops and not method_spec(cfg.method).multi_crop:
        users = ", ".join(name for name in METHODS if METHODS.get(name).multi_crop)
        raise ConfigError(f"method {cfg.method} does not use multi-crop small crops; set data.small_crops=0 (methods "
                          f"that use them: {users})")  # fmt: skip
    return cfg


def help_texts(cfg: Config | None = None) -> dict[str, tuple[Any, str]]:
    """Every dotted key of ``cfg`` (default: the defaults) with its value and help, allowed values included."""
    cfg = cfg if cfg is not None else Config()
    out: dict[str, tuple[Any, str]] = {}
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for name, value in sections(cfg):
        if is_section(value):
            out.update(section_help(value, f"{name}."))
        else:
            out[name] = (value, describe_field(fields[name]))
    return out


@dataclass(frozen=True)
class SettingChange:
    """One key whose value differs between a run's saved settings and the settings it is resumed with.

    Attributes:
        key: the dotted key.
        saved: the value the run was trained with (None when the key is not in the saved settings).
        new: the value asked for now (None when the key is not in the new settings).
        resumable: whether the key may change on resume without changing what is trained (see
            :func:`invprop.settings.setting`).
    """

    key: str
    saved: Any
    new: Any
    resumable: bool

    def describe(self) -> str:
        """``optim.batch_size 128 -> 64``."""
        return f"{self.key} {self.saved!r} -> {self.new!r}"


def _fields_by_key(cfg: Config) -> dict[str, tuple[Any, dataclasses.Field]]:
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    out: dict[str, tuple[Any, dataclasses.Field]] = {}
    for name, value in sections(cfg):
        if is_section(value):
            out.update(fields_by_key(value, f"{name}."))
        else:
            out[name] = (value, fields[name])
    return out


def setting_changes(saved: Config, new: Config) -> list[SettingChange]:
    """Every key whose value differs between ``saved`` and ``new``, in config.yaml's order.

    Example:
        >>> changes = setting_changes(Config(), from_dict({"epochs": 5, "optim": {"lr": 0.1}}))
        >>> [(c.describe(), c.resumable) for c in changes]
        [('epochs 800 -> 5', True), ('optim.lr 0.03 -> 0.1', False)]
    """
    before, after = _fields_by_key(saved), _fields_by_key(new)
    out = []
    for key in [*before, *(k for k in after if k not in before)]:
        old_value, old_field = before.get(key, (None, None))
        new_value, new_field = after.get(key, (None, None))
        if key in before and key in after and old_value == new_value:
            continue
        field_ = old_field if old_field is not None else new_field
        resumable = key in before and key in after and field_ is not None and is_resumable(field_)
        out.append(SettingChange(key, old_value, new_value, resumable))
    return out


def build_method(
    cfg: Config, encoder: nn.Module, num_samples: int, distributed: bool = False, in_channels: int = 3,
    mean: tuple[float, ...] = (), std: tuple[float, ...] = (),
) -> Method:  # fmt: skip
    """The method ``cfg`` describes, around ``encoder``, for ``num_samples`` training images (``distributed``: inside
    an initialised process group) of ``in_channels`` channels normalised by ``mean`` and ``std``."""
    context = BuildContext(num_samples, cfg.model.embedding_dim, distributed, in_channels, tuple(mean), tuple(std))
    return method_spec(cfg.method).build(cfg.method_settings, encoder, context)


def input_needs(model: ModelSettings) -> InputNeeds:
    """What the encoder of the ``model`` settings asks of the data: for a timm backbone, its native side for image
    folders, its pretrained weights' normalisation (when pretrained) and its patch side; nothing otherwise."""
    if not is_timm_backbone(model.backbone):
        return InputNeeds()
    native = model_input(model.backbone)
    normalization = (native.mean, native.std) if model.pretrained else None
    return InputNeeds(native.image_size, normalization, patch_side(model.backbone, model.patch_size) or 1)


def data_for(cfg: Config, name: str | None = None, foreign: bool = False, subset: bool = True) -> DataSplits:
    """The splits of ``cfg``'s data (or of dataset ``name``) as its encoder needs them (see
    :func:`invprop.data.datasets_from` for the arguments)."""
    return datasets_from(cfg.data, name, foreign, subset, input_needs(cfg.model))


def save_yaml(cfg: Config, path: str | Path) -> None:
    write_text_atomically(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__ = [
    "AUTOCAST_DTYPES",
    "data_for",
    "input_needs",
    "DATASET_PRESETS",
    "DEFAULT_METHOD",
    "DEFAULT_PRESET",
    "PRECISIONS",
    "PRESETS",
    "PRESET_REASONS",
    "Config",
    "SettingChange",
    "Provenance",
    "build_method",
    "DistributedSettings",
    "EvalSettings",
    "OptimSettings",
    "from_dict",
    "for_method",
    "from_saved",
    "help_texts",
    "load_yaml",
    "method_spec",
    "parse_override",
    "preset",
    "preset_values",
    "provenance",
    "save_yaml",
    "sections",
    "setting_changes",
    "to_dict",
    "validate",
]
