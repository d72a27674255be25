"""Command-line interface: ``invprop train | eval | presets``.

Bad input (unknown dataset, missing files, invalid settings, a run directory in use) prints one line
``invprop: error: ...`` to stderr and exits with code 2, without a traceback; a file that cannot be written (no space,
quota, read-only, permission) does the same with exit code 74 (:data:`invprop.errors.EXIT_WRITE_FAILED`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import yaml

from invprop import config as cfgmod
from invprop.config import Config
from invprop.config.fitted import FOLDER_BUDGET_SECONDS, FOLDER_TRAINING_SHARE, fitted_for
from invprop.data import IMAGEFOLDER_PREFIX, dataset_names
from invprop.data.datasets import image_folder_path
from invprop.data.dicom import FILE_WINDOW
from invprop.data.loader import worker_lost
from invprop.engine import (
    CHANGES_KEY,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    DERIVED_KEY,
    HISTORY_NAME,
    METRICS_NAME,
    TENSORBOARD_DIR,
    RunLock,
    Trainer,
    config_for_resume,
)
from invprop.engine.estimate import duration
from invprop.engine.process_group import (
    DistributedContext,
    barrier,
    init_distributed,
    launched_distributed,
    launched_rank,
    peer_lost,
    shutdown,
)
from invprop.engine.run_settings import Change, read_run_settings
from invprop.engine.signals import TrainingInterrupted
from invprop.engine.trainer import RunResult
from invprop.errors import (
    EXIT_USAGE,
    ChangesInsideEpoch,
    ConfigError,
    DataError,
    DeviceUnavailable,
    InvpropError,
    ResumeChangesRefused,
    RunBusyError,
)
from invprop.evaluation import PROTOCOLS, parse_variants, run_ablation
from invprop.evaluation.ablation import ablated_methods, ablation_of, paper_config
from invprop.evaluation.embed import SPLITS, embed, nearest_neighbors
from invprop.evaluation.export import FORMATS, ExportBusy, export_weights
from invprop.evaluation.runs import RowInterrupted
from invprop.files import check_writable
from invprop.methods import METHODS
from invprop.registry import UnknownNameError
from invprop.settings import deep_update
from invprop.trackers import TRACKER_RECORD

logger = logging.getLogger("invprop")

DEFAULT_RUNS_DIR = Path("runs")
#: The flag that lets ``--resume`` change settings that change what is trained.
ALLOW_CHANGES_FLAG = "--allow-changes"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"invprop: error: {message} (see {self.prog} --help)\n")


def _nested_overrides(texts: Sequence[str]) -> dict[str, Any]:
    """Merge several ``--set key=value`` texts into one nested dict (later ones win per key)."""
    merged: dict[str, Any] = {}
    for text in texts:
        deep_update(merged, cfgmod.parse_override(text))
    return merged


def _merge_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Nested overrides from ``--set`` and the dedicated flags."""
    merged = _nested_overrides(args.set or [])
    if args.epochs is not None:
        merged["epochs"] = args.epochs
    if getattr(args, "dataset", None):
        deep_update(merged, {"data": {"name": args.dataset}})
    if getattr(args, "strict_data", False):
        deep_update(merged, {"data": {"strict": True}})
    return merged


def _file_settings(path: str) -> dict[str, Any]:
    """The settings in a YAML file; a run's ``config.yaml`` gives its final values (its record of changes is not a
    setting)."""
    values = cfgmod.load_yaml(path)
    derived = values.pop(DERIVED_KEY, None)
    if values.pop(CHANGES_KEY, None) or derived:
        logger.info("%s is a run's settings file: using its final values", path)
    return values


def _base_config(args: argparse.Namespace, overrides: dict[str, Any], method: str | None = None) -> Config:
    """The preset (explicit, or named after the dataset, else digits) for the run's method, then the YAML file.

    The method and the recipe are settled first -- from ``--set method=...`` / ``optim.recipe=...``, the YAML file,
    or ``method`` -- so that the preset brings that method's own defaults and recipe for the dataset.
    """
    from_file = _file_settings(args.config) if args.config else {}
    method = overrides.get("method") or from_file.get("method") or method
    name = args.preset or _preset_for(args.dataset)
    recipe = cfgmod.recipe_asked(from_file, overrides)
    cfg = cfgmod.preset(name or cfgmod.DEFAULT_PRESET, method if isinstance(method, str) else None, recipe)
    if not args.preset:  # an image folder's settings fitted to it and to the machine, under the user's own
        cfg = cfgmod.from_dict(_fitted(_dataset_of(from_file, overrides), from_file, overrides), base=cfg)
    if not from_file:
        return cfg
    used = cfgmod.for_method(from_file, cfg.method)  # one file can serve several methods (a compare's config)
    unused = sorted(set(from_file) - set(used) - {"method"})
    if unused:
        logger.info("%s: %s not used by %s (settings of other methods)", args.config, ", ".join(unused), cfg.method)
    return cfgmod.from_dict(used, base=cfg)


def _epochs_in_budget(cfg: Config, seconds: float) -> Config:
    """``cfg`` with the epochs that fit in ``seconds`` on this machine (a timed probe), announced."""
    from invprop.evaluation.budget import probe

    measured = probe(cfg)
    epochs = measured.epochs_for(seconds)
    logger.info("no --epochs: %d epochs of %s fit in %s on this machine (%.1f s per epoch, probed); --epochs N to "
                "choose", epochs, cfg.method, duration(seconds), measured.epoch_seconds)  # fmt: skip
    return cfgmod.validate(cfgmod.from_dict({"epochs": epochs}, base=cfg))


def _dataset_of(*layers: Mapping[str, Any]) -> str:
    """The dataset the settings name, the last layer first (empty when none does)."""
    for values in reversed(layers):
        name = (values.get("data") or {}).get("name")
        if name:
            return str(name)
    return ""


def _fitted(dataset: str, from_file: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The fitted settings of an image folder that the user did not set (announced once); empty otherwise."""
    user = deep_update(deep_update({}, dict(from_file)), dict(overrides))
    values, note = fitted_for(dataset, user, str(user.get("device", "auto")))
    if note:
        logger.info("%s", note)
    return values


def default_out(kind: str, dataset: str) -> Path:
    """``runs/<kind>-<dataset>-<time>``: where a command writes without ``--out``."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", dataset.split("/")[-1]).strip("-") or "run"
    return DEFAULT_RUNS_DIR / f"{kind}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def _clear_run(run_dir: Path) -> None:
    """Remove what a run writes in ``run_dir`` (for --overwrite); other files in the folder are left alone."""
    for name in (CHECKPOINT_NAME, HISTORY_NAME, METRICS_NAME, CONFIG_NAME):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
    (run_dir / TRACKER_RECORD).unlink(missing_ok=True)  # a new tracker run; W&B's own folder keeps the old one


def _command(args: argparse.Namespace) -> str:
    """The command line, for the lock file a process holds on its run directory."""
    text = "invprop " + " ".join(args.argv)
    return text if len(text) <= 200 else text[:197] + "..."


def cmd_train(args: argparse.Namespace) -> int:
    overrides = _merge_overrides(args)
    if args.allow_changes and not args.resume:
        raise ConfigError(f"{ALLOW_CHANGES_FLAG} changes the settings of a resumed run; add --resume --out DIR")
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after must be at least 1, got {args.stop_after}")
    cfg: Config | None = None
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out DIR, the run directory to continue")
        if args.preset:
            raise ConfigError(
                "--preset starts a new run; --resume continues with the run's own settings (--set KEY=VALUE)"
            )
        if args.config:  # its values count as overrides (those of the run's method): the same check of changes
            saved = read_run_settings(Path(args.out))
            from_file = _file_settings(args.config)
            method = (saved.values.get("method") if saved else None) or from_file.get("method")
            used = cfgmod.for_method(from_file, method) if method else dict(from_file)
            if "method" in from_file:
                used["method"] = from_file["method"]  # a method change is checked like any other
            overrides = deep_update(used, overrides)
        run_dir = Path(args.out)
    else:
        cfg = cfgmod.validate(cfgmod.from_dict(overrides, base=_base_config(args, overrides)))
        from_file = _file_settings(args.config) if args.config else {}
        if cfg.data.name.startswith(IMAGEFOLDER_PREFIX) and "epochs" not in overrides and "epochs" not in from_file:
            cfg = _epochs_in_budget(cfg, FOLDER_BUDGET_SECONDS)
        run_dir = Path(args.out) if args.out else default_out(cfg.method, cfg.data.name)
    # One writer per run directory: the main process holds the lock from the check of what is there to the end.
    lock = RunLock(run_dir, _command(args)) if launched_rank() == 0 else contextlib.nullcontext()
    with lock:
        changes: list[Change] = []
        overwrite = False
        resume = bool(args.resume)
        if args.resume:
            plan = config_for_resume(run_dir, overrides, args.allow_changes)
            cfg, changes = plan.cfg, plan.changes
            if plan.from_start:
                logger.warning(
                    "%s has no checkpoint yet (the run was stopped before its first one was written): starting it "
                    "again from epoch 0 with its settings", run_dir,
                )  # fmt: skip
                overwrite, resume = True, False
        elif (run_dir / CHECKPOINT_NAME).exists() or (run_dir / HISTORY_NAME).exists():
            if not args.overwrite:
                raise ConfigError(
                    f"{run_dir} already holds a run; add --resume to continue it, --overwrite to replace it, or pick another --out"
                )
            overwrite = True
            logger.warning("--overwrite: replacing the run in %s", run_dir)
        assert cfg is not None
        cfgmod.validate(cfg)
        return _train(args, cfg, run_dir, overwrite, resume, changes)


def _train(
    args: argparse.Namespace, cfg: Config, run_dir: Path, overwrite: bool, resume: bool, changes: list[Change]
) -> int:
    """Join the process group (when launched by torchrun), train, and print the result."""
    context = init_distributed(cfg.device, cfg.distributed.backend, cfg.distributed.timeout_minutes)
    try:
        if overwrite and context.is_main:
            _clear_run(run_dir)
        barrier(context)
        result = _fit(cfg, run_dir, context, resume, args.stop_after, changes)
    except BaseException as err:
        # The trainer (and its DistributedDataParallel wrapper) must be gone before the process group is: torch 2.11
        # can hang at exit destroying them after it. Clearing the traceback's frames releases them.
        traceback.clear_frames(err.__traceback__)
        if isinstance(err, TrainingInterrupted) and not context.is_main:
            return err.exit_code  # the main process reports it
        lost = peer_lost(err, context)
        if lost is not None:
            raise lost from None
        raise
    finally:
        shutdown(context)
    if not context.is_main:
        return 0
    m = result.metrics
    state = (
        "finished" if result.finished else f"stopped after epoch {m['epochs']} of {cfg.epochs} (resume with --resume)"
    )
    print(f"run {state}: {result.run_dir}")
    print(f"epochs {m['epochs']}  loss {m['loss']:.4f}  training time {m['seconds']:.1f}s")
    if m.get("knn_top1") is not None:
        raw = m.get("baseline_raw_knn_top1")
        raw_text = f"  |  raw pixels: top-1 {raw:.4f}" if raw is not None else ""
        print(f"held-out kNN (K={cfg.eval.knn_k}): top-1 {m['knn_top1']:.4f}  top-5 {m['knn_top5']:.4f}{raw_text}")
    return 0


def _fit(
    cfg: Config,
    run_dir: Path,
    context: DistributedContext,
    resume: bool,
    stop_after: int | None,
    changes: list[Change],
) -> RunResult:
    """Train in a frame of its own, so that the trainer is released when it returns (see :func:`_train`)."""
    trainer = Trainer(cfg, run_dir, progress=None, context=context, changes=changes, resuming=resume)
    processes = f", {context.world_size} processes" if context.enabled else ""
    logger.info(
        "training %s on %s: %d images, %d epochs, device %s%s -> %s",
        cfg.method, cfg.data.name, len(trainer.data.train), cfg.epochs, trainer.device, processes, run_dir,
    )  # fmt: skip
    return trainer.fit(resume=resume, stop_after=stop_after)


def cmd_ablate(args: argparse.Namespace) -> int:
    names = parse_variants(args.variants, args.method)
    overrides = _merge_overrides(args)
    base = _base_config(args, overrides, args.method)
    if args.paper:
        base = paper_config(base, args.method)
        logger.info("the paper's setting: %s", ablation_of(args.method).paper_source)
    cfg = cfgmod.validate(cfgmod.from_dict(overrides, base=base))
    out_dir = Path(args.out) if args.out else default_out("ablate", cfg.data.name)
    command = "invprop " + " ".join(args.argv)
    logger.info("ablation of %d variants on %s, %d epochs each -> %s", len(names), cfg.data.name, cfg.epochs, out_dir)

    def report(row: Mapping[str, Any]) -> None:
        top1 = "-" if row["knn_top1"] is None else f"{row['knn_top1']:.4f}"
        logger.info("%s: kNN top-1 %s (%.1fs)", row["variant"], top1, row["seconds"] or 0.0)

    rows = run_ablation(cfg, names, out_dir, command, progress=None, on_row=report, method=args.method)
    print((out_dir / "results.md").read_text(), end="")
    print(f"results: {out_dir / 'results.md'} and {out_dir / 'results.json'} ({len(rows)} variants)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from invprop.evaluation.budget import parse_budget
    from invprop.evaluation.compare import parse_methods, run_comparison

    methods = parse_methods(args.methods)
    overrides = _merge_overrides(args)
    given = args.budget if args.budget is not None else args.budget_seconds
    budget = None if given is None else parse_budget(str(given))
    if budget is not None and "epochs" in overrides:
        raise ConfigError("--budget gives every method the epochs that fit in that time; drop --epochs (or epochs=)")
    preset = args.preset or _preset_for(args.dataset) or cfgmod.DEFAULT_PRESET
    file_values = _file_settings(args.config) if args.config else {}
    dataset = _dataset_of(file_values, overrides) or cfgmod.preset(preset).data.name
    if not args.preset:
        file_values = deep_update(_fitted(dataset, file_values, overrides), file_values)
    epochs_set = "epochs" in overrides or "epochs" in file_values
    if budget is None and not epochs_set and dataset.startswith(IMAGEFOLDER_PREFIX):
        budget = FOLDER_BUDGET_SECONDS * FOLDER_TRAINING_SHARE / len(methods)
        logger.info("no --epochs or --budget: the table should take about %s on this machine; each of the %d methods "
                    "trains %s (the epochs that fit, planned by a timed probe), the rest goes to probing and scoring",
                    duration(FOLDER_BUDGET_SECONDS), len(methods), duration(budget))  # fmt: skip
    labels = None
    if args.labels is not None:
        from invprop.evaluation.few_labels import read_labels

        if not dataset.startswith(IMAGEFOLDER_PREFIX):
            raise ConfigError(
                f"--labels labels images of a folder; use it with --dataset imagefolder:DIR, not {dataset}"
            )
        data_values = {**(file_values.get("data") or {}), **(overrides.get("data") or {})}
        window = str(data_values.get("dicom_window", FILE_WINDOW))
        labels = read_labels(Path(args.labels), image_folder_path(dataset), window)
    out_dir = Path(args.out) if args.out else default_out("compare", dataset)
    command = "invprop " + " ".join(args.argv)
    logger.info("comparing %d methods -> %s", len(methods), out_dir)

    def report(row: Mapping[str, Any]) -> None:
        top1 = row.get("diverged") or ("-" if row["knn_top1"] is None else f"kNN top-1 {row['knn_top1']:.4f}")
        logger.info("%s: %s (%.1fs)", row["method"], top1, row["seconds"] or 0.0)

    rows = run_comparison(
        methods, preset, file_values, overrides, out_dir, command, linear=not args.no_linear, on_row=report,
        budget_seconds=budget, criteria=not args.no_criteria, labels=labels,
    )  # fmt: skip
    print((out_dir / "results.md").read_text(), end="")
    print(f"results: {out_dir / 'results.md'} and {out_dir / 'results.json'} ({len(rows)} methods)")
    return 0


def _preset_for(dataset: str | None) -> str | None:
    """The preset named after ``dataset`` (cifar10's for image folders); None without a dataset."""
    if not dataset:
        return None
    if dataset in cfgmod.PRESETS:
        return dataset
    if dataset.startswith(IMAGEFOLDER_PREFIX):
        return "cifar10"
    if dataset not in dataset_names():
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join(dataset_names())}")
    return None


def cmd_eval(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (not args.untrained):
        raise ConfigError("give --checkpoint PATH (a run's last.pt or its directory), or --untrained for the baseline")
    overrides = _nested_overrides(args.set or [])
    if args.from_head_layer is not None:
        overrides.setdefault("eval", {})["from_head_layer"] = args.from_head_layer
    if args.s4l is not None:
        overrides.setdefault("eval", {})["s4l"] = args.s4l
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    results = PROTOCOLS[args.protocol](checkpoint, dataset=args.dataset, overrides=overrides)
    for key, value in results.items():
        if isinstance(value, float):
            print(f"{key}: {value:.4f}")
        elif isinstance(value, dict):
            print(
                f"{key}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
            )
        else:
            print(f"{key}: {value}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    path = embed(Path(args.checkpoint), args.dataset, args.split, Path(args.out), _nested_overrides(args.set or []))
    print(f"embeddings written: {path}")
    return 0


def cmd_neighbors(args: argparse.Namespace) -> int:
    render = Path(args.render) if args.render else None
    rows = nearest_neighbors(
        Path(args.checkpoint), args.query, args.k, args.dataset, args.split, _nested_overrides(args.set or []), render
    )
    for row in rows:
        where = f"  {row['path']}" if "path" in row else ""
        label = f"  label {row['label']}" if row["label"] >= 0 else ""
        print(f"{row['rank']:>3}  index {row['index']:>7}  similarity {row['similarity']:.4f}{label}{where}")
    if render is not None:
        print(f"rendered: {render}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    done = export_weights(Path(args.checkpoint), args.format, out, _nested_overrides(args.set or []))
    print(f"{args.format} weights written: {done.path}")
    if done.how_to_load:
        print(f"load them with: {done.how_to_load}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from invprop.evaluation.report import build_report  # matplotlib is imported only when a report is asked for

    runs = [Path(p) for p in args.runs]
    out = Path(args.out) if args.out else runs[0] / "report"
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    check_writable(out)  # before the figures are computed
    try:
        path = build_report(runs, out)
    except BaseException:
        for folder in made:  # a report that failed (no run there, say) leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    print(f"report written: {path} (figures as PNG beside it)")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    method = args.method
    if args.name and args.name.startswith(IMAGEFOLDER_PREFIX):
        return _show_fitted(args.name, method)
    if args.keys:
        name = args.name or cfgmod.DEFAULT_PRESET
        cfg = cfgmod.preset(name, method)
        origins = cfgmod.provenance(cfg, name)
        for key, (value, text) in cfgmod.help_texts(cfg).items():
            print(f"{key} = {value!r}\n    {text}")
            if key in origins:
                print(f"    {origins[key].describe()}")
        others = [
            name for name in METHODS if cfgmod.method_spec(name).sections() != cfgmod.method_spec(cfg.method).sections()
        ]
        print(
            f"\nthe sections of {cfg.method}; another method's: invprop presets --keys --method NAME ({', '.join(others)})"
        )
        return 0
    if args.name:
        print(yaml.safe_dump(cfgmod.to_dict(cfgmod.preset(args.name, method)), sort_keys=False), end="")
        return 0
    for name in cfgmod.PRESETS:
        c = cfgmod.preset(name, method)
        default = " (default)" if name == cfgmod.DEFAULT_PRESET else ""
        headline = "  ".join(f"{key}={value}" for key, value in _headline(c).items())
        print(
            f"{name}{default}: data={c.data.name} backbone={c.model.backbone} head={c.model.head} epochs={c.epochs} "
            f"lr={c.optim.lr} batch={c.optim.batch_size} wd={c.optim.weight_decay}  {headline}"
        )
    print("\nshow one in full: invprop presets NAME; every key with its help: invprop presets [NAME] --keys; "
          "for another method: --method NAME")  # fmt: skip
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from invprop.evaluation.compare import default_methods

    in_compare = set(default_methods())
    for name in METHODS:
        spec = METHODS.get(name)
        marks = [spec.family, *(["compare"] if name in in_compare else []), f"torchrun: {spec.torchrun.value}"]
        print(f"{name:20} {spec.summary}  [{', '.join(marks)}]")
    print("\ncompare: run by `invprop compare` without --methods; torchrun: exact (two processes train the weights of "
          "one), runs, or refused. Settings of one: invprop presets --keys --method NAME")  # fmt: skip
    return 0


def _show_fitted(dataset: str, method: str | None) -> int:
    """``invprop presets imagefolder:DIR``: the settings fitted to the folder and this machine, with their reasons,
    then the whole configuration a run of it gets (nothing is trained or decoded)."""
    values, note = fitted_for(dataset, {})
    if note is None:
        raise DataError(f"{image_folder_path(dataset)} is not a folder of images")
    cfg = cfgmod.from_dict({**values, "data": {**values.get("data", {}), "name": dataset}},
                           base=cfgmod.preset(_preset_for(dataset) or cfgmod.DEFAULT_PRESET, method))  # fmt: skip
    print("# " + note.replace("\n", "\n# "))
    print(f"# epochs: those that fit in {duration(FOLDER_BUDGET_SECONDS)} of training on this machine (train), or in "
          f"{FOLDER_TRAINING_SHARE:.0%} of {duration(FOLDER_BUDGET_SECONDS)} split between the methods (compare), "
          "found by a timed probe; --epochs N or --budget TIME to choose")  # fmt: skip
    print(yaml.safe_dump(cfgmod.to_dict(cfg), sort_keys=False), end="")
    return 0


def _headline(cfg: Config) -> dict[str, Any]:
    """The method's headline settings of ``cfg``, by dotted key."""
    values = cfgmod.help_texts(cfg)
    return {key: values[key][0] for key in cfgmod.method_spec(cfg.method).headline}


def _default_methods() -> list[str]:
    from invprop.evaluation.compare import default_methods

    return default_methods()


def _settings_flags() -> _Parser:
    """The flags every command that builds a run's settings shares (an argparse parent)."""
    flags = _Parser(add_help=False)
    flags.add_argument("--dataset", help=f"dataset: {', '.join(dataset_names())}")
    flags.add_argument("--preset", help=f"start from a preset: {', '.join(cfgmod.PRESETS)}")
    flags.add_argument("--config", help="YAML file of settings (applied over the preset; each method takes the "
                       "sections it has)")  # fmt: skip
    flags.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, e.g. optim.lr=0.1 "
                       "(for every method that has the key)")  # fmt: skip
    flags.add_argument("--epochs", type=int, help="total epochs of the schedule (of every method or variant)")
    return flags


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="invprop", description="Unsupervised representation learning by Invariance Propagation.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    settings = [_settings_flags()]

    train = sub.add_parser(
        "train", parents=settings, help=f"train a model (default: {cfgmod.DEFAULT_METHOD} on the bundled digits)"
    )
    train.add_argument("--out", help="run directory (default: runs/<method>-<dataset>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument(
        "--stop-after", type=int, metavar="N", help="end cleanly after epoch N; the schedule stays that of --epochs"
    )
    train.add_argument(
        "--strict-data", action="store_true", help="fail on unreadable image files instead of skipping them"
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out instead of refusing")
    train.add_argument(
        ALLOW_CHANGES_FLAG,
        action="store_true",
        help="with --resume: accept settings that change what is trained (e.g. optim.lr); they apply from the next "
        "epoch and are recorded in config.yaml and history.jsonl. Without it such a resume is refused; epochs, "
        "eval.*, workers and device may always change",
    )
    train.set_defaults(func=cmd_train)

    tables = ablated_methods()
    ab = sub.add_parser(
        "ablate", parents=settings,
        help=f"train a method's ablation table ({', '.join(tables)}) with one config",
    )  # fmt: skip
    ab.add_argument("--method", default=cfgmod.DEFAULT_METHOD, choices=tables, help="whose table (its spec's ablation)")
    ab.add_argument(
        "--variants",
        help="comma-separated subset of the table's variants (default: all). "
        + "; ".join(f"{method}: {', '.join(ablation_of(method).variants)}" for method in tables),
    )
    ab.add_argument(
        "--paper",
        action="store_true",
        help="the setting the method's paper ran its table in, over the preset and --config; --set still wins ("
        + "; ".join(f"{method}: {ablation_of(method).paper_source}" for method in tables)
        + ")",
    )
    ab.add_argument(
        "--out",
        help="results folder, one run directory per variant; re-run to resume (default: runs/ablate-<dataset>-<time>)",
    )
    ab.set_defaults(func=cmd_ablate)

    cp = sub.add_parser(
        "compare", parents=settings,
        help="train several methods on the same data and seed, for the same epochs or time (--budget), each with its defaults and recipe, and rank them",
    )  # fmt: skip
    cp.add_argument(
        "--methods",
        help=f"comma-separated methods (default: those marked compare in invprop methods: {', '.join(_default_methods())})",
    )
    cp.add_argument("--no-linear", action="store_true", help="skip the linear probe of each method")
    cp.add_argument(
        "--labels", metavar="FILE.csv",
        help="a few labels of an image folder's images (path,label rows, paths relative to the folder): the kNN and "
        "linear columns come from those images alone, cross-validated, and rank the table",
    )  # fmt: skip
    cp.add_argument(
        "--no-criteria", action="store_true",
        help="skip the label-free criteria (RankMe, LiDAR, CLID, ...) of each method; an unlabelled table is then not "
        "ranked",
    )  # fmt: skip
    budget = cp.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget", metavar="TIME",
        help="equal wall-clock time instead of equal epochs: every method gets the epochs that a short probe on this "
        "machine finds fit in TIME (90s, 20m, 1h30m), its schedule planned for them; excludes --epochs",
    )  # fmt: skip
    budget.add_argument("--budget-seconds", type=float, metavar="S", help="--budget in seconds")
    cp.add_argument(
        "--out",
        help="results folder, one run directory per method; re-run to resume (default: runs/compare-<dataset>-<time>)",
    )
    cp.set_defaults(func=cmd_compare)

    ev = sub.add_parser("eval", help="evaluate a checkpoint")
    ev.add_argument(
        "protocol",
        choices=list(PROTOCOLS),
        help="knn: weighted kNN on the held-out split; linear: logistic regression on frozen backbone features; "
        "semi: fine-tuning with 1%% and 10%% of the labels vs training from scratch; transfer: linear and fine-tuning "
        "on --dataset; distill: the network fine-tuned on 1%% and 10%% of the labels teaches a fresh student on every "
        "training image, unlabelled (SimCLRv2's third stage); dense: a linear probe at every location of the backbone's "
        "feature map, labelling 2 x 2 mosaics of held-out images by quadrant",
    )
    ev.add_argument("--checkpoint", help="a run's last.pt (or the run directory)")
    ev.add_argument("--untrained", action="store_true", help="evaluate a randomly initialised encoder (the baseline)")
    ev.add_argument("--dataset", help="evaluate on another dataset than the one trained on")
    ev.add_argument(
        "--from-head-layer", type=int, metavar="N",
        help="read the output of the head's first N layers instead of the backbone (SimCLRv2 fine-tunes from N=1); "
        "the same as --set eval.from_head_layer=N",
    )  # fmt: skip
    ev.add_argument(
        "--s4l", metavar="TASK",
        help="semi: also train S4L from scratch on each subset's labels plus a self-supervised loss on every image: "
        "rotation or exemplar (the same as --set eval.s4l=TASK)",
    )  # fmt: skip
    ev.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. eval.knn_k=20")
    ev.set_defaults(func=cmd_eval)

    em = sub.add_parser("embed", help="write a dataset's embeddings (and labels, file paths) to an .npz file")
    em.add_argument("--checkpoint", required=True,
                    help="a run's last.pt (or the run directory), or pretrained:timm:NAME")  # fmt: skip
    em.add_argument("--dataset", help="dataset to embed (default: the one trained on)")
    em.add_argument("--split", default="train", choices=SPLITS, help="which split (non-augmented images)")
    em.add_argument("--out", required=True, help="output .npz file")
    em.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, e.g. data.root=PATH")
    em.set_defaults(func=cmd_embed)

    nb = sub.add_parser("neighbors", help="the images nearest to a query image (by index or file)")
    nb.add_argument("--checkpoint", required=True,
                    help="a run's last.pt (or the run directory), or pretrained:timm:NAME")  # fmt: skip
    nb.add_argument("--query", required=True, help="an index into the split, or an image file")
    nb.add_argument("-k", type=int, default=10, help="how many neighbours (default 10)")
    nb.add_argument("--dataset", help="dataset to search (default: the one trained on)")
    nb.add_argument("--split", default="train", choices=SPLITS, help="which split to search")
    nb.add_argument("--render", metavar="FILE.png", help="also draw the query and its neighbours into a PNG")
    nb.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override")
    nb.set_defaults(func=cmd_neighbors)

    ex = sub.add_parser(
        "export",
        help="export weights for torchvision (ResNets), timm (timm:NAME backbones), as safetensors (any) "
        "or as an ONNX graph that takes pixels (any; pip install 'invprop[onnx]')",
    )
    ex.add_argument("--checkpoint", required=True,
                    help="a run's last.pt (or the run directory), or pretrained:timm:NAME")  # fmt: skip
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", help="output file (default: next to the checkpoint)")
    ex.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="for a pretrained:timm:NAME source: e.g. model.pretrained_file=PATH")  # fmt: skip
    ex.set_defaults(func=cmd_export)

    rp = sub.add_parser("report", help="one offline HTML page of figures comparing runs")
    rp.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories written by invprop train, or compare folders (their methods, and the table)",
    )
    rp.add_argument("--out", help="folder for report.html and the PNGs (default: FIRST_RUN/report)")
    rp.set_defaults(func=cmd_report)

    me = sub.add_parser("methods", help="list the training methods: family, summary, and what compare and torchrun do")
    me.set_defaults(func=cmd_methods)

    pr = sub.add_parser("presets", help="list the presets, or print one in full")
    pr.add_argument("name", nargs="?", help="preset to print as YAML")
    pr.add_argument(
        "--method", default=None, help=f"for this method (default {cfgmod.DEFAULT_METHOD}): {', '.join(METHODS)}"
    )
    pr.add_argument("--keys", action="store_true", help="list every setting with its value in the preset and its help")
    pr.set_defaults(func=cmd_presets)
    return parser


#: How torch re-raises, in the main process, an error raised in a DataLoader worker: the worker's traceback first.
WORKER_TRACEBACK = "Original Traceback"


@functools.singledispatch
def words(err: InvpropError) -> str:
    """What the command line says of an error: its message, and for errors that carry their data, the flags that
    get past them. An error raised in a DataLoader worker comes back wrapped in the worker's traceback: its own
    message is the last line, after the exception's name."""
    text = str(err)
    if WORKER_TRACEBACK in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return text


@words.register
def _(err: TrainingInterrupted) -> str:
    return f"{err}; continue with --resume --out {err.run_dir}"


@words.register
def _(err: RowInterrupted) -> str:
    return f"{err}; run the same command again to go on (finished rows are reused)"


@words.register
def _(err: RunBusyError) -> str:
    return f"{err}; wait for it to finish, or use another --out"


@words.register
def _(err: ExportBusy) -> str:
    return f"{err}; export elsewhere with --out FILE"


@words.register
def _(err: ResumeChangesRefused) -> str:
    return (f"{err}; resume without them, or add {ALLOW_CHANGES_FLAG} to train from epoch {err.epoch} on with the "
            "new values (recorded in config.yaml and history.jsonl)")  # fmt: skip


@words.register
def _(err: ChangesInsideEpoch) -> str:
    return f"{err}; resume without the changes and --stop-after {err.epoch}, then change them"


@words.register
def _(err: DeviceUnavailable) -> str:
    return f"{err}; use --set device=cpu"


def _log_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A Python warning (ours or a library's) as one log line, without its source location and code."""
    logger.warning("warning: %s", str(message).strip().splitlines()[0] if str(message).strip() else category.__name__)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list:
        args_list = ["train"]  # no arguments: InvP on digits
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        args_list = ["train", *args_list]
        args = parser.parse_args(args_list)
    args.argv = args_list
    if launched_distributed() and args.func is not cmd_train:
        parser.exit(
            EXIT_USAGE,
            f"invprop: error: only 'invprop train' runs under torchrun; run '{args.command}' as one process\n",
        )
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    warnings.simplefilter("default")  # each distinct warning once
    warnings.showwarning = _log_warning
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as err:
        print(f"invprop: {words(err)}", file=sys.stderr)
        return err.exit_code
    except InvpropError as err:
        print(f"invprop: error: {words(err)}", file=sys.stderr)
        return err.exit_code
    except UnknownNameError as err:
        print(f"invprop: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as err:
        lost = worker_lost(err)
        if lost is None:
            raise
        print(f"invprop: error: {words(lost)}", file=sys.stderr)
        return lost.exit_code
    except KeyboardInterrupt:
        print("invprop: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
