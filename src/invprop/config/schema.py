"""The schema of a run's settings: the shared sections, plus the sections of its method.

A run's :class:`Config` holds the run-level keys (``method``, ``epochs``, ``seed``, ``device``, ...), the shared
sections -- ``data`` (:class:`invprop.data.DataSettings`), ``model`` (:class:`invprop.models.ModelSettings`),
``optim``, ``eval``, ``distributed`` and ``log`` -- and only its own method's sections, declared and registered with
the method (:data:`invprop.methods.METHODS`): InvP's ``bank`` and ``loss``, SimCLR's ``simclr``, ... Every field
carries its help, its range and its allowed values (:mod:`invprop.settings`).

Sources, later ones winning: the defaults, a preset (:mod:`invprop.config.presets`), a YAML file, ``--set
key=value`` overrides with dotted keys, and the CLI's own flags. :func:`validate` checks every range and choice before
any work.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, get_type_hints

import torch

from invprop.data import DataSettings
from invprop.distributed.collectives import BACKENDS
from invprop.errors import ConfigError
from invprop.methods import METHODS, MethodSpec
from invprop.models import ModelSettings, check_model_settings, is_timm_backbone
from invprop.optim_settings import RECIPES, OptimSettings, warmup_epochs_of
from invprop.settings import (
    AT_LEAST_ONE,
    AT_LEAST_TWO,
    NON_NEGATIVE,
    POSITIVE,
    check_value,
    close_match,
    coerce,
    describe_field,
    flattened,
    is_section,
    leaves,
    merge,
    section,
    setting,
    top_level,
)
from invprop.trackers import TRACKERS

#: Mixed-precision modes: the autocast dtype of each (None = fp32); ``auto`` is bf16 on CUDA and fp32 on the CPU.
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
PRECISIONS = ("auto", *AUTOCAST_DTYPES)
DEFAULT_METHOD = "invp"


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
    online_probe: bool = setting(
        False,
        "train a linear classifier on the labels during pretraining, on detached backbone features of each batch's "
        "first view (one extra forward pass without gradients); logs online_probe_loss, online_probe_train_top1 and, "
        "with the kNN monitor, online_probe_top1 on the held-out split; needs labels",
    )
    online_probe_lr: float = setting(0.1, "the online probe's SGD learning rate (constant)", bounds=POSITIVE)
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
    from_head_layer: int = setting(
        0,
        "evaluate (and fine-tune, and distil) the output of the head's first this many layers instead of the "
        "backbone's features, as SimCLRv2 fine-tunes from its projector's first layer (0: the backbone)",
        bounds=NON_NEGATIVE,
        resumable=True,
    )
    distill_temperature: float = setting(
        1.0,
        "tau of eval distill's soft labels: softmax(logits / tau) of the teacher and of the student (Chen et al., "
        "2020b, Eq. 3; 1 in the authors' distillation colab)",
        bounds=POSITIVE,
        resumable=True,
    )
    s4l: str | None = setting(
        None,
        "eval semi: also train S4L (Zhai et al., 2019) from scratch on each labelled subset plus a self-supervised "
        "loss on every training image -- rotation or exemplar (null: no S4L row)",
        resumable=True,
    )
    s4l_weight: float = setting(
        1.0, "w, the weight of S4L's self-supervised loss (the authors' configs: 1)", bounds=NON_NEGATIVE,
        resumable=True,
    )  # fmt: skip
    s4l_views: int = setting(
        8, "S4L-Exemplar's augmented views of each image (the authors': 8 crops)", bounds=AT_LEAST_TWO, resumable=True
    )
    dense_mosaics: int = setting(
        2000,
        "eval dense: 2 x 2 mosaics of images drawn from the training split for the per-location probe, and as many "
        "from the held-out split to score it (capped at a quarter of each split)",
        bounds=AT_LEAST_ONE,
        resumable=True,
    )
    label_free_images: int = setting(
        2048,
        "held-out images the label-free criteria (RankMe, cluster learnability, intrinsic dimension, uniformity) "
        "are computed on (capped at the held-out split)",
        bounds=AT_LEAST_TWO,
        resumable=True,
    )
    lidar_images: int = setting(
        512, "held-out images of LiDAR and the alignment (each a class of its augmented views)", bounds=AT_LEAST_TWO,
        resumable=True,
    )  # fmt: skip
    lidar_views: int = setting(
        8, "augmented views of each image for LiDAR and the alignment", bounds=AT_LEAST_TWO, resumable=True
    )
    cl_clusters: int | None = setting(
        None,
        "k-means clusters of the cluster learnability (default: the square root of the images, at least 2)",
        bounds=AT_LEAST_TWO,
        resumable=True,
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


@dataclass
class LogSettings:
    """The ``log`` section: how a run reports while it trains."""

    every_steps: int = setting(
        50,
        "steps between copies of the logged terms to the host (and, under torchrun, between the all-reduces that "
        "average them and agree on a stop signal); the epoch's end always syncs",
        bounds=AT_LEAST_ONE,
        resumable=True,
    )
    tracker: str = setting(
        "tensorboard",
        "where the per-epoch history, the settings, metrics.json and the report's figures are mirrored: tensorboard "
        "(when installed), wandb, mlflow or none; the run's own files are written either way",
        choices=TRACKERS,
        resumable=True,
    )
    project: str = setting("invprop", "the W&B project or MLflow experiment that runs go to", resumable=True)
    tracker_uri: str = setting(
        "",
        "MLflow's tracking URI (empty: MLFLOW_TRACKING_URI, else a file store 'mlruns' beside the run folder)",
        resumable=True,
    )


@dataclass
class Config:
    """The settings of one run: the shared sections and ``method_settings``, the method's own sections.

    ``method_settings`` sits between ``model`` and ``optim`` in listings and config.yaml (:func:`sections`); it is the
    method's :meth:`~invprop.methods.MethodSpec.new_sections` and is read through the method's spec, typed, in
    library code. For scripts and tests, ``cfg.loss`` (any of the method's sections) reads it too; a run of another
    method has none of them. Build one with :func:`from_dict` or :func:`invprop.config.preset`.
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
    method_settings: Any = flattened()
    optim: OptimSettings = section(OptimSettings, "the optimiser")
    eval: EvalSettings = section(EvalSettings, "evaluation")
    distributed: DistributedSettings = section(DistributedSettings, "multi-process runs")
    log: LogSettings = section(LogSettings, "reporting while training")

    def __post_init__(self) -> None:
        if self.method_settings is None:
            self.method_settings = method_spec(self.method).new_sections()

    @property
    def spec(self) -> MethodSpec:
        """The run's method, as registered."""
        return method_spec(self.method)

    if not TYPE_CHECKING:  # mypy does not see this shortcut: library code reads the method's settings typed

        def __getattr__(self, name: str) -> Any:
            # Only called when normal lookup fails: the method's sections (``cfg.loss``, ``cfg.classifier``, ...).
            settings = self.__dict__.get("method_settings")
            if settings is not None and not name.startswith("__") and name in _field_names(settings):
                return getattr(settings, name)
            raise AttributeError(
                f"{type(self).__name__} of method {self.__dict__.get('method')!r} has no setting {name!r}"
            )


_HINTS = get_type_hints(Config)
#: The run-level keys and shared sections: no method's section may take one of these names.
_SHARED_NAMES = frozenset(f.name for f in dataclasses.fields(Config) if f.name != "method_settings")


def _field_names(settings: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(settings)]


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``; a one-line error naming the choices (and the closest) otherwise, or when its
    sections would take the name of a shared key."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}{close_match(name, METHODS)}; choose one of: {', '.join(METHODS)}")
    spec = METHODS.get(name)
    taken = [section for section in spec.sections() if section in _SHARED_NAMES]
    if taken:
        raise ConfigError(f"method {name} names a settings section {', '.join(taken)}, which is a shared key of every "
                          "run; register it under another name")  # fmt: skip
    return spec


def sections(cfg: Config) -> list[tuple[str, Any]]:
    """``(name, value)`` of every top-level key, the method's sections included, in config.yaml's order."""
    return [(name, value) for name, value, _ in top_level(cfg)]


def to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain values: the run-level keys, the shared sections and the method's own sections."""
    return {name: dataclasses.asdict(value) if is_section(value) else value for name, value in sections(cfg)}


def owners(section_name: str) -> list[str]:
    """The methods that have a section of this name."""
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
            methods = owners(str(key))
            if methods:
                raise ConfigError(
                    f"{key}.* belongs to method {', '.join(methods)}, not to {cfg.method}; set method first, or drop {key}"
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
        if type(base.method_settings) is spec.sections_type:
            cfg.method_settings = copy.deepcopy(base.method_settings)
    _merge(cfg, values)
    return cfg


def for_method(values: Mapping[str, Any], method: str) -> dict[str, Any]:
    """``values`` (nested settings) without ``method`` and without the sections that only other methods have, so
    one file or one set of overrides can serve several methods (``invprop compare``).

    Example:
        >>> sorted(for_method({"method": "invp", "loss": {"weight": 1}, "optim": {"lr": 0.1}}, "simclr"))
        ['optim']
    """
    own = method_spec(method).sections()
    return {k: v for k, v in values.items() if k != "method" and (k in own or not owners(str(k)))}


def validate(cfg: Config) -> Config:
    """Check every range and choice; raises :class:`ConfigError` with a one-line message. Returns ``cfg``."""
    for key, value, f in leaves(cfg):
        check_value(f, value, key)
    warmup = warmup_epochs_of(cfg.optim, cfg.epochs)
    if warmup >= cfg.epochs:
        raise ConfigError(f"the warm-up (optim.warmup_epochs, at most optim.warmup_share of the run) must be shorter "
                          f"than the run; it is {warmup} of {cfg.epochs} epochs")  # fmt: skip
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
    if cfg.data.small_crops and not cfg.spec.multi_crop:
        users = ", ".join(name for name in METHODS if METHODS.get(name).multi_crop)
        raise ConfigError(f"method {cfg.method} does not use multi-crop small crops; set data.small_crops=0 (methods "
                          f"that use them: {users})")  # fmt: skip
    return cfg


def help_texts(cfg: Config | None = None) -> dict[str, tuple[Any, str]]:
    """Every dotted key of ``cfg`` (default: the defaults) with its value and help, allowed values included."""
    return {key: (value, describe_field(f)) for key, value, f in leaves(cfg if cfg is not None else Config())}


__all__ = [
    "AUTOCAST_DTYPES",
    "DEFAULT_METHOD",
    "PRECISIONS",
    "Config",
    "DistributedSettings",
    "EvalSettings",
    "LogSettings",
    "OptimSettings",
    "RECIPES",
    "for_method",
    "from_dict",
    "help_texts",
    "method_spec",
    "owners",
    "sections",
    "to_dict",
    "validate",
    "warmup_epochs_of",
]
