"""Saved runs' settings: reading a run's settings back (upgrading what earlier versions wrote) and comparing them
with the settings a run is resumed with."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from invprop.config.schema import DEFAULT_METHOD, Config, from_dict, method_spec, owners, to_dict
from invprop.files import write_text_atomically
from invprop.settings import fields_by_key, is_resumable

#: Keys of earlier versions, as ``(old section, old key) -> (new section, new key)``, upgraded when a saved run's
#: settings are read.
RENAMED = {("distributed", "bank"): ("bank", "placement")}

#: A parameter only the ``mlp_bn`` head has: runs of earlier versions saved that head under the name ``mlp``.
BATCHNORM_HEAD_KEY = "encoder.head.1.running_mean"


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
    spec = method_spec(values.get("method", DEFAULT_METHOD))
    for name in [k for k in values if k not in spec.sections() and owners(k)]:
        del values[name]  # another method's section, saved by an earlier version
    optim = values.get("optim")
    if isinstance(optim, dict) and "warmup_epochs" in optim and optim["warmup_epochs"] is None:
        # Earlier versions' null: the method's default warm-up (the instance classifier's 10 epochs), capped at the
        # share that optim.warmup_share now holds (10%, as it was).
        optim["warmup_epochs"] = spec.presets.get("*", {}).get("optim", {}).get("warmup_epochs", 0)
    return from_dict(values)


def save_yaml(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically."""
    write_text_atomically(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


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


def setting_changes(saved: Config, new: Config) -> list[SettingChange]:
    """Every key whose value differs between ``saved`` and ``new``, in config.yaml's order.

    Example:
        >>> changes = setting_changes(Config(), from_dict({"epochs": 5, "optim": {"lr": 0.1}}))
        >>> [(c.describe(), c.resumable) for c in changes]
        [('epochs 800 -> 5', True), ('optim.lr 0.03 -> 0.1', False)]
    """
    before, after = fields_by_key(saved), fields_by_key(new)
    out = []
    for key in [*before, *(k for k in after if k not in before)]:
        old_value, old_field = before.get(key, (None, None))
        new_value, new_field = after.get(key, (None, None))
        if key in before and key in after and old_value == new_value:
            continue
        field_: dataclasses.Field | None = old_field if old_field is not None else new_field
        resumable = key in before and key in after and field_ is not None and is_resumable(field_)
        out.append(SettingChange(key, old_value, new_value, resumable))
    return out


__all__ = ["BATCHNORM_HEAD_KEY", "RENAMED", "SettingChange", "from_saved", "save_yaml", "setting_changes"]
