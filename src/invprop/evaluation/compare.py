"""``invprop compare``: which method is best on MY data, at MY budget?

Every method trains on the same data and seed, for the same epochs or (``--budget``) the same wall-clock time,
each with its own preset defaults and published recipe (the dataset's
shared settings plus the method's, as ``invprop presets --method NAME`` shows them), into ``OUT/<method>/`` -- an
ordinary run directory, reused when finished and resumed when interrupted (the machinery of ``ablate``). A shared
``--config`` file or ``--set`` override applies to every method that has its key; a section that only other methods
have is skipped for this one. ``results.md`` and ``results.json`` are rewritten after every method.

Per method the table gives: held-out kNN top-1/top-5 (the run's monitor), linear-probe top-1 (the ``eval linear``
protocol), the untrained encoder's kNN top-1 (same architecture and seed, no training: the floor to beat), wall
time per epoch and in total, images per second, and peak memory.

With a budget, each method is first timed by a short probe on this machine (:mod:`invprop.evaluation.budget`)
and gets the epochs that fit: its schedule and warm-up are planned for the run it will have. The probe's result is
kept in the method's ``compare.json``, so that a resumed comparison keeps every method's epochs.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from invprop import config as cfgmod
from invprop.config import Config, data_for
from invprop.engine import RunLock
from invprop.engine.device import resolve_device
from invprop.engine.monitor import knn_monitor
from invprop.errors import ConfigError, DivergedError
from invprop.evaluation.ablation import RESULTS_JSON
from invprop.evaluation.budget import BUDGET_KEY, planned_epochs
from invprop.evaluation.compare_table import write_comparison
from invprop.evaluation.criteria import SCORES_KEY
from invprop.evaluation.few_labels import Labels, few_label_entry
from invprop.evaluation.label_free import label_free_scores
from invprop.evaluation.linear import evaluate_linear
from invprop.evaluation.loading import load_eval_context
from invprop.evaluation.pretrained import is_pretrained, pretrained_backbone, pretrained_config, pretrained_run
from invprop.evaluation.runs import train_or_reuse
from invprop.files import write_text_atomically
from invprop.machine import describe_machine, peak_memory_bytes, reset_peak_memory
from invprop.methods import METHODS
from invprop.models import encoder_from
from invprop.settings import close_match, deep_update

logger = logging.getLogger(__name__)

#: What ``compare`` measures beside the run's own metrics, kept in each run directory (so reused rows keep it).
MEASURES_NAME = "compare.json"
#: The key of the ``--labels`` scores in ``compare.json``.
LABELS_KEY = "labels"


def default_methods() -> list[str]:
    """The methods of ``invprop compare`` without ``--methods``: those whose spec says so
    (:attr:`invprop.methods.MethodSpec.compare`), the library's default method first."""
    chosen = [name for name in METHODS if METHODS.get(name).compare]
    return sorted(chosen, key=lambda name: name != cfgmod.DEFAULT_METHOD)


def parse_methods(text: str | None) -> list[str]:
    """``"invp,simclr,pretrained:timm:resnet50"`` -> the rows, in order: registered methods, and off-the-shelf
    encoders (:mod:`invprop.evaluation.pretrained`); a one-line error names an unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()] if text else default_methods()
    for name in names:
        if is_pretrained(name):
            pretrained_backbone(name)
        elif name not in METHODS:
            raise ConfigError(f"unknown method {name!r}{close_match(name, METHODS)}; choose from: {', '.join(METHODS)}, "
                              "or pretrained:timm:NAME for an off-the-shelf encoder")  # fmt: skip
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods names a method twice: {text}")
    return names


def method_config(preset: str, method: str, file_values: Mapping[str, Any], overrides: Mapping[str, Any]) -> Config:
    """``method``'s preset for ``preset``, then the keys of ``file_values`` and ``overrides`` that it has; for an
    off-the-shelf encoder, the library's default method's, with that encoder (:func:`pretrained_config`)."""
    if is_pretrained(method):
        return pretrained_config(method, _with_file(method_config(preset, cfgmod.DEFAULT_METHOD, {}, {}), file_values,
                                                    overrides))  # fmt: skip
    file_values, overrides = _without_weights_file(file_values), _without_weights_file(overrides)
    values = cfgmod.preset_values(preset, method, cfgmod.recipe_asked(file_values, overrides))
    deep_update(values, cfgmod.for_method(file_values, method))
    deep_update(values, cfgmod.for_method(overrides, method))
    return cfgmod.validate(cfgmod.from_dict(values))


def _without_weights_file(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """``values`` without ``model.pretrained_file`` unless they also ask for ``model.pretrained``: in a compare the
    file is the pretrained rows' (``--set model.pretrained_file=PATH``), not the trained rows'."""
    model = values.get("model")
    if not isinstance(model, Mapping) or "pretrained_file" not in model or model.get("pretrained") is True:
        return values
    return {**values, "model": {k: v for k, v in model.items() if k != "pretrained_file"}}


def _with_file(base: Config, file_values: Mapping[str, Any], overrides: Mapping[str, Any]) -> Config:
    """``base`` with the settings given for every row (each given setting it has), ``model.pretrained_file``
    included."""
    values = cfgmod.to_dict(base)
    deep_update(values, cfgmod.for_method(file_values, base.method))
    deep_update(values, cfgmod.for_method(overrides, base.method))
    model = values["model"]
    if model.get("pretrained_file") is not None:
        model["pretrained"] = True  # checked by pretrained_config's validation, with the backbone it sets
    return cfgmod.from_dict(values)


@torch.no_grad()
def untrained_knn(cfg: Config) -> dict[str, float]:
    """kNN top-1 of ``cfg``'s encoder as initialised (seed ``cfg.seed``), on the head embeddings (``knn_top1``) and
    on the backbone features (``knn_backbone_top1``): the floors. Empty for unlabelled data."""
    data = data_for(cfg)
    if not data.labelled or data.memory is None or data.test is None:
        return {}
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    encoder = encoder_from(cfg.model, data.in_channels, data.image_size, (data.mean, data.std)).to(device)
    scores = knn_monitor(
        encoder, data.memory, data.test, data.num_classes, device, cfg.eval.knn_k, cfg.eval.knn_sigma,
        cfg.data.num_workers,
    )  # fmt: skip
    return {key: scores[key] for key in ("knn_top1", "knn_backbone_top1")}


def _measures(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MEASURES_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_measures(run_dir: Path, measures: Mapping[str, Any]) -> None:
    write_text_atomically(run_dir / MEASURES_NAME, json.dumps(measures, indent=2) + "\n")


def budgeted(cfg: Config, run_dir: Path, budget_seconds: float) -> Config:
    """``cfg`` with the epochs that fit in ``budget_seconds`` on this machine (the probe's, or those kept in
    ``run_dir``'s ``compare.json`` for the same budget, where the plan is saved before any training)."""
    with RunLock(run_dir, f"invprop compare --budget, method {cfg.method}"):
        epochs, entry = planned_epochs(cfg, run_dir / MEASURES_NAME, budget_seconds)
        _write_measures(run_dir, {**_measures(run_dir), BUDGET_KEY: entry})
    logger.info(
        "compare, method %s: %.2f s per epoch on this machine -> %d epochs in %.0f s",
        cfg.method, entry["epoch_seconds"], epochs, budget_seconds,
    )  # fmt: skip
    return cfgmod.validate(cfgmod.from_dict({**cfgmod.to_dict(cfg), "epochs": epochs}))


def run_method(
    cfg: Config,
    run_dir: Path,
    linear: bool = True,
    progress: bool | None = None,
    criteria: bool = True,
    labels: Labels | None = None,
    pretrained: str | None = None,
) -> dict[str, Any]:
    """Train (or reuse, or resume) ``cfg``'s method in ``run_dir`` and measure its row of the table (with
    ``criteria``, its label-free scores too; with ``labels``, its kNN and linear columns from those images). With
    ``pretrained`` (``pretrained:timm:NAME``; ``cfg`` its :func:`pretrained_config`), the row of that encoder as it
    is, measured alike, its untrained columns those of the same network randomly initialised."""
    device = resolve_device(cfg.device)
    measures = _measures(run_dir)

    def record(metrics: Mapping[str, Any], trained: bool) -> None:
        if trained:  # the peak of the last training segment (a resumed run: since it resumed)
            measures["peak_memory_bytes"] = peak_memory_bytes(device)
            measures["peak_memory_of"] = "CUDA tensors" if device.type == "cuda" else "process resident set"
        _write_measures(run_dir, measures)

    reset_peak_memory(device)
    if pretrained is not None:
        metrics = pretrained_run(cfg, run_dir)
    else:
        metrics = train_or_reuse(cfg, run_dir, f"compare, method {cfg.method}", progress, record)
    changed = False
    if "untrained_knn_backbone_top1" not in measures:  # rows measured before the backbone column lack it
        floors = untrained_knn(randomly_initialised(cfg))
        measures["untrained_knn_top1"] = floors.get("knn_top1")
        measures["untrained_knn_backbone_top1"] = floors.get("knn_backbone_top1")
        changed = True
    if linear and "linear_top1" not in measures and metrics.get("knn_top1") is not None:
        measures["linear_top1"] = evaluate_linear(run_dir)["linear_top1"]
        changed = True
    if labels is not None and (measures.get(LABELS_KEY) or {}).get("key") != labels.key:
        measures[LABELS_KEY] = few_label_entry(run_dir, cfg, labels)
        changed = True
    if criteria and SCORES_KEY not in measures:
        ctx = load_eval_context(run_dir, require_labels=False)
        measures[SCORES_KEY] = label_free_scores(ctx.encoder, ctx.splits, ctx.cfg, ctx.device) or None
        changed = True
    if changed:
        with RunLock(run_dir, "invprop compare"):
            _write_measures(run_dir, measures)
    epochs = metrics.get("epochs") or 0
    seconds = metrics.get("seconds")
    images = len(data_for(cfg).train) if seconds else 0
    if labels is not None:  # the columns come from the labelled images alone
        few = measures[LABELS_KEY]
        metrics = {**metrics, "knn_top5": None, **{k: few["trained"][k] for k in ("knn_top1", "knn_backbone_top1")}}
        measures = {**measures, "linear_top1": few["trained"]["linear_top1"],
                    "untrained_knn_top1": few["untrained"]["knn_top1"],
                    "untrained_knn_backbone_top1": few["untrained"]["knn_backbone_top1"]}  # fmt: skip
    return {
        "method": pretrained or cfg.method,
        "run": run_dir.name,
        "summary": f"{pretrained}: its pretrained weights, not trained here" if pretrained else cfg.spec.summary,
        "epochs": epochs,
        "knn_top1": metrics.get("knn_top1"),
        "knn_top5": metrics.get("knn_top5"),
        "linear_top1": measures.get("linear_top1"),
        "untrained_knn_top1": measures.get("untrained_knn_top1"),
        "knn_backbone_top1": metrics.get("knn_backbone_top1"),
        "untrained_knn_backbone_top1": measures.get("untrained_knn_backbone_top1"),
        "seconds": seconds,
        "seconds_per_epoch": seconds / epochs if seconds and epochs else None,
        "images_per_second": images * epochs / seconds if seconds else None,
        "peak_memory_bytes": measures.get("peak_memory_bytes"),
        "baseline_raw_knn_top1": metrics.get("baseline_raw_knn_top1"),
        "budget": measures.get(BUDGET_KEY),
        SCORES_KEY: measures.get(SCORES_KEY),
    }


def randomly_initialised(cfg: Config) -> Config:
    """``cfg`` with its backbone's weights left random (the untrained floor of a pretrained row; as is otherwise)."""
    if not cfg.model.pretrained:
        return cfg
    values = cfgmod.to_dict(cfg)
    values["model"].update(pretrained=False, pretrained_file=None)
    return cfgmod.validate(cfgmod.from_dict(values))


def row_folder(name: str) -> str:
    """The folder of a row in the compare's ``--out``: the method's name, ``pretrained-timm-NAME`` for an
    off-the-shelf encoder."""
    return name.replace(":", "-")


def diverged_row(cfg: Config, diverged: DivergedError) -> dict[str, Any]:
    """The row of a method whose training diverged: where, and its untrained floors; no trained measures."""
    floors = untrained_knn(cfg)
    return {
        "method": cfg.method,
        "summary": cfg.spec.summary,
        "diverged": f"diverged at epoch {diverged.epoch}, step {diverged.step}",
        "epochs": diverged.epoch - 1,
        **dict.fromkeys(("knn_top1", "knn_top5", "linear_top1", "knn_backbone_top1", "seconds"), None),
        **dict.fromkeys(("seconds_per_epoch", "images_per_second", "peak_memory_bytes", "baseline_raw_knn_top1"), None),
        "untrained_knn_top1": floors.get("knn_top1"),
        "untrained_knn_backbone_top1": floors.get("knn_backbone_top1"),
    }


def run_comparison(
    methods: Sequence[str],
    preset: str,
    file_values: Mapping[str, Any],
    overrides: Mapping[str, Any],
    out_dir: Path,
    command: str,
    linear: bool = True,
    progress: bool | None = None,
    on_row: Callable[[Mapping[str, Any]], None] | None = None,
    budget_seconds: float | None = None,
    criteria: bool = True,
    labels: Labels | None = None,
) -> list[dict[str, Any]]:
    """Train and measure every method of ``methods`` into ``out_dir``; the table is rewritten after each one.
    With ``budget_seconds``, every method gets the epochs that fit in that time (:func:`budgeted`)."""
    configs = [method_config(preset, m, file_values, overrides) for m in methods]  # every error before any work
    rows_of = dict(zip(methods, configs, strict=True))
    first = configs[0]
    if any(cfg.spec.colour_only for cfg in configs):
        channels = data_for(first).in_channels
        for cfg in configs:
            cfg.spec.check_images(channels)
    configs_of = {name: cfgmod.to_dict(cfg) for name, cfg in rows_of.items()}
    header = {
        "dataset": first.data.name,
        "epochs": first.epochs if budget_seconds is None else None,
        "budget_seconds": budget_seconds,
        "labels": None
        if labels is None
        else {
            "file": str(labels.source),
            "images": len(labels.files),
            "classes": len(labels.files.classes),
            "folds": labels.folds,
        },
        "seed": first.seed,
        "command": command,
        "machine": describe_machine(resolve_device(first.device)),
        "date": datetime.date.today().isoformat(),
        "configs": configs_of,
    }
    rows: list[dict[str, Any]] = []
    with RunLock(out_dir, command):
        for name, cfg in rows_of.items():
            pretrained = name if is_pretrained(name) else None
            folder = out_dir / row_folder(name)
            if budget_seconds is not None and pretrained is None:
                cfg = budgeted(cfg, folder, budget_seconds)
                configs_of[name] = cfgmod.to_dict(cfg)
            try:
                rows.append(run_method(cfg, folder, linear, progress, criteria, labels, pretrained))
            except DivergedError as diverged:  # the answer for this method on this data; the others still run
                logger.warning("compare, method %s: %s", cfg.method, diverged)
                rows.append(diverged_row(cfg, diverged))
            write_comparison(rows, out_dir, header)
            if on_row is not None:
                on_row(rows[-1])
    return rows


def compare_rows(folder: Path) -> list[dict[str, Any]] | None:
    """The rows of a compare folder's ``results.json`` (None when ``folder`` is not one)."""
    path = folder / RESULTS_JSON
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except ValueError:
        return None
    return payload.get("rows") if isinstance(payload, dict) and payload.get("kind") == "compare" else None


__all__ = [
    "budgeted",
    "default_methods",
    "MEASURES_NAME",
    "compare_rows",
    "method_config",
    "parse_methods",
    "run_comparison",
    "run_method",
    "untrained_knn",
    "write_comparison",
]
