"""One nested configuration for a run; every key has a default and a help text.

Sources, later ones winning: the defaults below, a preset (:data:`PRESETS`), a YAML file, ``--set key=value``
overrides with dotted keys, and the CLI's own flags. :func:`validate` checks types and ranges before any work.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints

import yaml

from invprop.errors import ConfigError
from invprop.files import write_text_atomically


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    name: str = _f("digits", "dataset: digits, cifar10, cifar100, svhn, stl10, mnist or imagefolder:PATH")
    subset: int | None = _f(None, "train on a fixed, stratified subset of this many training images (null = all)")
    root: str = _f("~/.cache/invprop/data", "folder holding torchvision-format datasets (nothing is downloaded)")
    augment: str | None = _f(None, "augmentation preset (digits, cifar, imagenet); null = the dataset's own")
    image_size: int | None = _f(None, "image side for image folders; null = the dataset's own (32 for folders)")
    num_workers: int = _f(0, "DataLoader worker processes of the per-image pipeline (0 = load in the training process)")
    pipeline: str = _f(
        "auto",
        "tensor (decode once, augment whole batches on the training device), per_image (torchvision transforms in "
        "workers) or auto (tensor for the built-in small-image datasets, per_image for imagefolder:PATH)",
    )
    cache_dir: str | None = _f("~/.cache/invprop/images", "where decoded image folders are cached (null = no cache)")
    strict: bool = _f(False, "fail on unreadable image files, naming them (default: skip them with a warning)")


@dataclass
class ModelConfig:
    backbone: str = _f("digits_convnet", "backbone: digits_convnet, small_convnet, resnet18_cifar, resnet18, resnet50")
    head: str = _f("mlp", "projection head: linear or mlp")
    embedding_dim: int = _f(128, "embedding (bank) dimension D")
    hidden_dim: int | None = _f(None, "MLP head hidden width; null = the backbone's feature width")


@dataclass
class BankConfig:
    momentum: float = _f(0.5, "EMA momentum m of the memory bank, in [0, 1)")
    num_neighbors: int = _f(4, "k, neighbours per image in the propagation graph")
    graph_update: str = _f("online", "neighbour upkeep: online (batch rows after each step) or rebuild (each epoch)")
    rebuild_chunk: int = _f(4096, "rows per block of the exact graph rebuild (memory O(chunk x N))")
    dtype: str = _f("float32", "bank storage: float32, float16 or bfloat16 (half the memory; see docs/benchmarks.md)")
    rebuild_search: str = _f("exact", "search of the graph rebuild: exact, or faiss (approximate; pip install 'invprop[faiss]')")
    faiss_lists: int | None = _f(None, "k-means cells of the FAISS index (null = 4 sqrt(N))")
    faiss_probe: int = _f(32, "FAISS cells scanned per query (more = slower, higher recall)")


@dataclass
class LossConfig:
    temperature: float = _f(0.07, "tau (0.07 for a linear head, 0.2 for an MLP head in the authors' code)")
    n_background: int = _f(4096, "N_b, nearest bank rows forming the background M_i (capped at the bank size)")
    steps: int = _f(3, "l, propagation hops")
    n_hard_positives: int = _f(50, "P, hard positives per anchor (20 for CIFAR-10 in the authors' code)")
    knn_positives: int | None = _f(None, "K of the knn-positives method (nearest bank rows as positives); null = P")
    exact: bool = _f(True, "exact de-duplicated positive set (true) or the authors' concatenation (false)")
    hard_positives: bool = _f(True, "use the least similar positives (false = most similar: ablation)")
    hard_negatives: bool = _f(True, "background = N_b nearest rows (false = whole bank: ablation)")
    exclusive: bool = _f(True, "drop the anchor's own row from the invariance term's background")
    weight: float = _f(0.6, "lambda, weight of the invariance term (Eq. 7)")
    rampup: str = _f("binary", "ramp-up w(t) of the invariance term: binary or gaussian")
    rampup_epochs: int = _f(30, "T: the invariance term is off (binary) or ramping (gaussian) for T epochs")


@dataclass
class OptimConfig:
    lr: float = _f(0.03, "base learning rate of SGD")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(5e-4, "weight decay (not applied to norm layers and biases)")
    batch_size: int = _f(128, "images per step, summed over all processes of a distributed run (the global batch)")
    schedule: str = _f("cosine", "learning-rate schedule: cosine or step")
    warmup_epochs: int | None = _f(
        None,
        "linear warm-up epochs; null = 10% of the epochs (at most 10) for the instance classifier, none for the "
        "memory-bank methods",
    )
    milestones: list[int] | None = _f(None, "epochs at which the step schedule decays (default: 50%, 75%, 87.5%)")
    gamma: float = _f(0.1, "decay factor of the step schedule")


@dataclass
class EvalConfig:
    knn_k: int = _f(200, "K of the weighted kNN monitor (capped at the training set size)")
    knn_sigma: float = _f(0.07, "sigma of the weighted kNN monitor")
    every: int = _f(1, "run the kNN monitor every this many epochs (and after the last)")
    finetune_epochs: int = _f(30, "epochs of fine-tuning in the semi and transfer protocols (pretrained and scratch alike)")
    finetune_lr: float = _f(0.002, "SGD learning rate of fine-tuning (cosine schedule, momentum 0.9)")
    finetune_batch_size: int = _f(64, "images per fine-tuning step (capped at the labelled subset size)")


@dataclass
class ClassifierConfig:
    temperature: float = _f(0.2, "tau of the instance classifier's cosine softmax")
    smoothing: float = _f(0.2, "alpha of hard-class label smoothing, in [0, 1) (0 = off: plain one-hot targets)")
    hard_classes: int = _f(100, "k, hard classes per instance for label smoothing (mined once per epoch)")
    prior: bool = _f(True, "contrastive-prior initialisation of the weights (false = Gaussian random)")
    views: int = _f(2, "augmented views per image in each batch")
    mining_chunk: int = _f(4096, "rows per block of the hard-class search (memory O(chunk x N))")


@dataclass
class DistributedConfig:
    bank: str = _f(
        "replicated",
        "memory bank of a multi-process run: replicated (every process holds it all) or sharded (each holds a block "
        "of rows; for banks larger than one device)",
    )
    sync_bn: bool = _f(False, "convert BatchNorm layers to SyncBatchNorm (CUDA only) in a multi-process run")
    backend: str = _f("auto", "torch.distributed backend: auto (nccl on CUDA, gloo on CPU), nccl or gloo")
    timeout_minutes: int = _f(60, "how long a process waits for the others at a collective (e.g. during evaluation)")


@dataclass
class Config:
    method: str = _f("invp", "training objective: invp, insdis, insdis-hard, knn-positives or instance-classifier")
    epochs: int = _f(800, "total epochs of the schedule")
    seed: int = _f(0, "random seed (data order, augmentation, initialisation)")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    precision: str = _f("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp16 or fp32")
    channels_last: bool = _f(True, "channels_last memory format on CUDA")
    compile: bool = _f(False, "torch.compile the encoder's forward (slower start, faster steps on CUDA)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


#: Presets: overrides of the defaults, by name. ``digits`` is the embedded default (a few minutes on a laptop CPU);
#: the others carry the authors' hyperparameters (../shared/docs/method.md).
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "epochs": 100,
        "data": {"name": "digits"},
        "model": {"backbone": "digits_convnet", "head": "mlp"},
        "loss": {"temperature": 0.1, "n_background": 1024, "n_hard_positives": 20, "rampup_epochs": 10},
        "optim": {"lr": 0.05, "batch_size": 128},
    },
    "cifar10": {
        "epochs": 800,
        "data": {"name": "cifar10", "num_workers": 4},
        "model": {"backbone": "resnet18_cifar", "head": "mlp"},
        "loss": {"temperature": 0.2, "n_hard_positives": 20, "steps": 3},
        "optim": {"lr": 0.03, "batch_size": 128, "weight_decay": 5e-4},
    },
    "cifar100": {
        "epochs": 800,
        "data": {"name": "cifar100", "num_workers": 4},
        "model": {"backbone": "resnet18_cifar", "head": "mlp"},
        "loss": {"temperature": 0.2, "n_hard_positives": 20, "steps": 4},
        "optim": {"lr": 0.03, "batch_size": 128, "weight_decay": 5e-4},
    },
    "svhn": {
        "epochs": 800,
        "data": {"name": "svhn", "num_workers": 4},
        "model": {"backbone": "resnet18_cifar", "head": "mlp"},
        "loss": {"temperature": 0.2, "n_hard_positives": 20},
        "optim": {"lr": 0.03, "batch_size": 128, "weight_decay": 5e-4},
    },
    "stl10": {
        "epochs": 800,
        "data": {"name": "stl10", "num_workers": 8},
        "model": {"backbone": "resnet18", "head": "mlp"},
        "loss": {"temperature": 0.2, "n_hard_positives": 20},
        "optim": {"lr": 0.03, "batch_size": 256, "weight_decay": 5e-4},
    },
    "mnist": {
        "epochs": 50,
        "data": {"name": "mnist", "num_workers": 2},
        "model": {"backbone": "digits_convnet", "head": "mlp"},
        "loss": {"temperature": 0.1, "n_hard_positives": 20, "rampup_epochs": 10},
        "optim": {"lr": 0.05, "batch_size": 256},
    },
    "imagenet": {
        "epochs": 800,
        "data": {"name": "imagefolder:~/data/imagenet", "augment": "imagenet", "image_size": 224, "num_workers": 16},
        "model": {"backbone": "resnet50", "head": "mlp"},
        "loss": {"temperature": 0.2, "n_background": 4096, "n_hard_positives": 50, "steps": 3},
        "optim": {"lr": 0.03, "batch_size": 256, "weight_decay": 1e-4},
    },
}
DEFAULT_PRESET = "digits"

#: Allowed values of the string-choice keys.
CHOICES: dict[str, tuple[str, ...]] = {
    "bank.graph_update": ("online", "rebuild"),
    "bank.dtype": ("float32", "float16", "bfloat16"),
    "bank.rebuild_search": ("exact", "faiss"),
    "distributed.bank": ("replicated", "sharded"),
    "distributed.backend": ("auto", "nccl", "gloo"),
    "loss.rampup": ("binary", "gaussian"),
    "optim.schedule": ("cosine", "step"),
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "model.head": ("linear", "mlp"),
    "data.augment": ("digits", "cifar", "imagenet"),
    "data.pipeline": ("auto", "tensor", "per_image"),
}


#: Methods that train with a warm-up by default (``optim.warmup_epochs: null``), as a share of the epochs, capped.
WARMUP_SHARE = {"instance-classifier": 0.1}
MAX_DEFAULT_WARMUP_EPOCHS = 10


def warmup_epochs(cfg: Config) -> int:
    """``optim.warmup_epochs``, or the method's default when it is null."""
    if cfg.optim.warmup_epochs is not None:
        return cfg.optim.warmup_epochs
    return min(int(cfg.epochs * WARMUP_SHARE.get(cfg.method, 0.0)), MAX_DEFAULT_WARMUP_EPOCHS)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _merge(cfg: Any, values: Mapping[str, Any], prefix: str = "") -> None:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'configuration'} must be a mapping, got {values!r}")
    hints = get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown setting {prefix}{key}{hint}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{prefix}{key}.")
        else:
            setattr(cfg, key, _coerce(value, hints[key], f"{prefix}{key}"))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the field type ``hint`` (ints are accepted for floats)."""
    args = get_args(hint)
    if value is None:
        if type(None) in args or hint is type(None):
            return None
        raise ConfigError(f"{key} cannot be null")
    if type(None) in args:
        hint = next(a for a in args if a is not type(None))
    origin = get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = get_args(hint)
        return [_coerce(v, item, key) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key} must be a {hint.__name__}, got {value!r}")
    return value


def from_dict(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """A config from nested ``values`` applied over ``base`` (default: the library defaults)."""
    cfg = Config()
    if base is not None:
        _merge(cfg, to_dict(base))
    _merge(cfg, values)
    return cfg


def preset(name: str) -> Config:
    """The configuration of preset ``name``."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint}; choose one of: {', '.join(PRESETS)}")
    return from_dict(PRESETS[name])


def parse_override(text: str) -> dict[str, Any]:
    """``"loss.temperature=0.2"`` -> ``{"loss": {"temperature": 0.2}}`` (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value with a dotted key, e.g. loss.temperature=0.2; got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


def save_yaml(cfg: Config, path: str | Path) -> None:
    write_text_atomically(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def help_texts(cfg: Any | None = None, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Every dotted key with its current value and help text."""
    cfg = cfg if cfg is not None else Config()
    out: dict[str, tuple[Any, str]] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(help_texts(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (value, f.metadata.get("help", ""))
    return out


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> Config:
    """Check ranges and choices; raises :class:`ConfigError` with a one-line message. Returns ``cfg``."""
    for key, choices in CHOICES.items():
        value = help_texts(cfg)[key][0]
        _check(value is None or value in choices, f"{key} must be one of {', '.join(choices)}; got {value!r}")
    _check(cfg.epochs >= 1, f"epochs must be at least 1, got {cfg.epochs}")
    _check(cfg.loss.temperature > 0, f"loss.temperature must be positive, got {cfg.loss.temperature}")
    _check(0 <= cfg.bank.momentum < 1, f"bank.momentum must be in [0, 1), got {cfg.bank.momentum}")
    _check(cfg.bank.num_neighbors >= 1, f"bank.num_neighbors must be at least 1, got {cfg.bank.num_neighbors}")
    _check(cfg.bank.rebuild_chunk >= 1, f"bank.rebuild_chunk must be positive, got {cfg.bank.rebuild_chunk}")
    _check(
        cfg.bank.faiss_lists is None or cfg.bank.faiss_lists >= 1, f"bank.faiss_lists must be positive, got {cfg.bank.faiss_lists}"
    )
    _check(cfg.bank.faiss_probe >= 1, f"bank.faiss_probe must be positive, got {cfg.bank.faiss_probe}")
    _check(
        cfg.distributed.timeout_minutes >= 1,
        f"distributed.timeout_minutes must be at least 1, got {cfg.distributed.timeout_minutes}",
    )
    _check(cfg.classifier.temperature > 0, f"classifier.temperature must be positive, got {cfg.classifier.temperature}")
    _check(0 <= cfg.classifier.smoothing < 1, f"classifier.smoothing must be in [0, 1), got {cfg.classifier.smoothing}")
    _check(cfg.classifier.hard_classes >= 1, f"classifier.hard_classes must be at least 1, got {cfg.classifier.hard_classes}")
    _check(cfg.classifier.views >= 1, f"classifier.views must be at least 1, got {cfg.classifier.views}")
    _check(cfg.classifier.mining_chunk >= 1, f"classifier.mining_chunk must be positive, got {cfg.classifier.mining_chunk}")
    _check(cfg.loss.steps >= 1, f"loss.steps must be at least 1, got {cfg.loss.steps}")
    _check(cfg.loss.n_hard_positives >= 1, f"loss.n_hard_positives must be at least 1, got {cfg.loss.n_hard_positives}")
    _check(
        cfg.loss.knn_positives is None or cfg.loss.knn_positives >= 1,
        f"loss.knn_positives must be at least 1, got {cfg.loss.knn_positives}",
    )
    _check(cfg.loss.n_background >= 1, f"loss.n_background must be at least 1, got {cfg.loss.n_background}")
    _check(cfg.loss.weight >= 0, f"loss.weight must be non-negative, got {cfg.loss.weight}")
    _check(cfg.loss.rampup_epochs >= 0, f"loss.rampup_epochs must be non-negative, got {cfg.loss.rampup_epochs}")
    _check(cfg.optim.lr > 0, f"optim.lr must be positive, got {cfg.optim.lr}")
    _check(cfg.optim.batch_size >= 2, f"optim.batch_size must be at least 2, got {cfg.optim.batch_size}")
    _check(cfg.optim.weight_decay >= 0, f"optim.weight_decay must be non-negative, got {cfg.optim.weight_decay}")
    _check(0 <= cfg.optim.momentum < 1, f"optim.momentum must be in [0, 1), got {cfg.optim.momentum}")
    _check(
        cfg.optim.warmup_epochs is None or 0 <= cfg.optim.warmup_epochs < cfg.epochs,
        f"optim.warmup_epochs must be in [0, epochs), got {cfg.optim.warmup_epochs}",
    )
    _check(cfg.model.embedding_dim >= 1, f"model.embedding_dim must be positive, got {cfg.model.embedding_dim}")
    _check(cfg.eval.knn_k >= 1, f"eval.knn_k must be positive, got {cfg.eval.knn_k}")
    _check(cfg.eval.knn_sigma > 0, f"eval.knn_sigma must be positive, got {cfg.eval.knn_sigma}")
    _check(cfg.eval.every >= 1, f"eval.every must be at least 1, got {cfg.eval.every}")
    _check(cfg.eval.finetune_epochs >= 1, f"eval.finetune_epochs must be at least 1, got {cfg.eval.finetune_epochs}")
    _check(cfg.eval.finetune_lr > 0, f"eval.finetune_lr must be positive, got {cfg.eval.finetune_lr}")
    _check(cfg.eval.finetune_batch_size >= 2, f"eval.finetune_batch_size must be at least 2, got {cfg.eval.finetune_batch_size}")
    _check(cfg.data.num_workers >= 0, f"data.num_workers must be non-negative, got {cfg.data.num_workers}")
    _check(
        cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"),
        f"device must be auto, cpu, cuda or cuda:N; got {cfg.device!r}",
    )
    return cfg
