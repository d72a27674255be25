"""A run's settings, in four rooms: the schema (:mod:`~invprop.config.schema`), presets and provenance
(:mod:`~invprop.config.presets`), saved runs and resume diffs (:mod:`~invprop.config.saved`), and what the
settings build (:mod:`~invprop.config.factories`)."""

from invprop.config.factories import build_method, data_for, input_needs
from invprop.config.presets import (
    DATASET_PRESETS,
    DEFAULT_PRESET,
    PRESET_REASONS,
    PRESETS,
    Provenance,
    preset,
    preset_values,
    provenance,
)
from invprop.config.saved import BATCHNORM_HEAD_KEY, SettingChange, from_saved, save_yaml, setting_changes
from invprop.config.schema import (
    AUTOCAST_DTYPES,
    DEFAULT_METHOD,
    PRECISIONS,
    Config,
    DistributedSettings,
    EvalSettings,
    LogSettings,
    OptimSettings,
    for_method,
    from_dict,
    help_texts,
    method_spec,
    owners,
    sections,
    to_dict,
    validate,
)
from invprop.settings import load_yaml, parse_override

__all__ = [
    "AUTOCAST_DTYPES",
    "BATCHNORM_HEAD_KEY",
    "DATASET_PRESETS",
    "DEFAULT_METHOD",
    "DEFAULT_PRESET",
    "PRECISIONS",
    "PRESETS",
    "PRESET_REASONS",
    "Config",
    "DistributedSettings",
    "EvalSettings",
    "LogSettings",
    "OptimSettings",
    "Provenance",
    "SettingChange",
    "build_method",
    "data_for",
    "for_method",
    "from_dict",
    "from_saved",
    "help_texts",
    "input_needs",
    "load_yaml",
    "method_spec",
    "owners",
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
