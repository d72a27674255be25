"""The paper's comparisons as one tool: train each variant with the same seed, data order and config, then tabulate.

Each variant trains into ``OUT/<variant>/`` (an ordinary run directory). A finished variant is reused, an
interrupted one is resumed, so ``invprop ablate`` can be re-run until the table is complete. ``results.md`` and
``results.json`` are rewritten after every variant. The results folder and each variant's run directory are locked
while they are written (:class:`~invprop.engine.RunLock`): a second ``ablate`` of the same folder is refused.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from invprop.config import DEFAULT_METHOD, Config, from_dict, method_spec, to_dict
from invprop.engine import RunLock
from invprop.engine.device import resolve_device
from invprop.errors import ConfigError
from invprop.evaluation.runs import fmt, train_or_reuse
from invprop.files import write_text_atomically
from invprop.machine import describe_machine
from invprop.methods import METHODS, Ablation, Variant
from invprop.settings import close_match

logger = logging.getLogger(__name__)

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"


def ablated_methods() -> list[str]:
    """The methods whose spec has an ablation table."""
    return [name for name in METHODS if METHODS.get(name).ablation is not None]


def ablation_of(method: str) -> Ablation:
    """``method``'s ablation table (:attr:`invprop.methods.MethodSpec.ablation`); a one-line error otherwise."""
    table = method_spec(method).ablation if method in METHODS else None
    if table is None:
        choices = ablated_methods()
        raise ConfigError(f"no ablation for method {method!r}{close_match(method, choices)}; choose one of: "
                          f"{', '.join(choices)}")  # fmt: skip
    return table


def paper_config(base: Config, method: str) -> Config:
    """``base`` in the setting the paper of ``method``'s table ran it in (:attr:`Ablation.paper`)."""
    return from_dict(dict(ablation_of(method).paper), base=base)


def parse_variants(text: str | None, method: str = DEFAULT_METHOD) -> list[str]:
    """``a,b,c`` -> validated variant names of ``method``'s table (all of them for None or ``all``)."""
    table = ablation_of(method).variants
    if text is None or text.strip() == "all":
        return list(table)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--variants is empty; give names separated by commas, e.g. {','.join(list(table)[:2])}")
    for name in names:
        if name not in table:
            raise ConfigError(f"unknown variant {name!r} of {method}{close_match(name, table)}; choose from: "
                              f"{', '.join(table)}")  # fmt: skip
    if len(set(names)) != len(names):
        raise ConfigError(f"--variants names a variant twice: {text}")
    return names


def variant_of(method: str, name: str) -> Variant:
    return ablation_of(method).variants[name]


def variant_config(base: Config, method: str, name: str) -> Config:
    """``base`` with the overrides of variant ``name`` of ``method``'s table."""
    return from_dict(dict(variant_of(method, name).overrides), base=base)


def _row(name: str, table: Ablation, cfg: Config, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "variant": name,
        "description": table.variants[name].description,
        "method": cfg.method,
        "epochs": metrics.get("epochs"),
        "knn_top1": metrics.get("knn_top1"),
        "knn_top5": metrics.get("knn_top5"),
        **{key: metrics.get(key) for key, _ in table.columns},
        "seconds": metrics.get("seconds"),
    }


def run_variant(base: Config, method: str, name: str, out_dir: Path, progress: bool | None = None) -> dict[str, Any]:
    """Train (or reuse, or resume) variant ``name`` of ``method``'s table in ``out_dir/name``; returns its row."""
    cfg = variant_config(base, method, name)
    metrics = train_or_reuse(cfg, out_dir / name, f"ablate, variant {name}", progress)
    row = _row(name, ablation_of(method), cfg, metrics)
    return {**row, "baseline_raw_knn_top1": metrics.get("baseline_raw_knn_top1")}


def write_results(
    rows: Sequence[Mapping[str, Any]], out_dir: Path, header: Mapping[str, Any], table: Ablation | None = None
) -> None:
    """``results.json`` (everything) and ``results.md`` (the table, with ``table``'s own columns) in ``out_dir``,
    written atomically."""
    columns = table.columns if table is not None else ()
    payload = {**header, "variants": [dict(r) for r in rows]}
    raw = next((r.get("baseline_raw_knn_top1") for r in rows if r.get("baseline_raw_knn_top1") is not None), None)
    lines = [
        f"# Ablation: {header['dataset']}, {header['epochs']} epochs",
        "",
        f"Command: `{header['command']}`  ",
        f"Machine: {header['machine']}  ",
        f"Date: {header['date']}",
        "",
        "| variant | what | kNN top-1 | kNN top-5 | "
        + "".join(f"{title} | " for _, title in columns)
        + "wall time s |",
        "|---|---|---|---|" + "---|" * len(columns) + "---|",
    ]
    for r in rows:
        own = "".join(f"{fmt(r.get(key), '{:.3f}')} | " for key, _ in columns)
        lines.append(
            f"| {r['variant']} | {r['description']} | {fmt(r['knn_top1'])} | {fmt(r['knn_top5'])} | {own}"
            f"{fmt(r['seconds'], '{:.1f}')} |"
        )
    if raw is not None:
        lines += ["", f"Raw pixels, same weighted kNN: top-1 {raw:.4f}."]
    lines += [
        "",
        "kNN: weighted kNN (K and sigma of `eval.knn_*`) on the held-out split, fresh embeddings of the last epoch. "
        "Wall time: training plus the per-epoch kNN monitor.",
    ]
    if table is not None and table.notes:
        lines[-1] += f" {table.notes}"
    write_text_atomically(out_dir / RESULTS_JSON, json.dumps(payload, indent=2) + "\n")
    write_text_atomically(out_dir / RESULTS_MD, "\n".join(lines) + "\n")


def run_ablation(
    base: Config,
    names: Sequence[str],
    out_dir: Path,
    command: str,
    progress: bool | None = None,
    on_row: Callable[[Mapping[str, Any]], None] | None = None,
    method: str = DEFAULT_METHOD,
) -> list[dict[str, Any]]:
    """Train every variant of ``names`` (of ``method``'s table) over ``base`` into ``out_dir`` and write the results
    after each one."""
    with RunLock(out_dir, command):
        return _run_variants(base, method, names, out_dir, command, progress, on_row)


def _run_variants(
    base: Config,
    method: str,
    names: Sequence[str],
    out_dir: Path,
    command: str,
    progress: bool | None,
    on_row: Callable[[Mapping[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    device = resolve_device(base.device)
    header = {
        "dataset": base.data.name,
        "epochs": base.epochs,
        "seed": base.seed,
        "command": command,
        "machine": describe_machine(device),
        "date": datetime.date.today().isoformat(),
        "base_config": to_dict(base),
    }
    rows: list[dict[str, Any]] = []
    for name in names:
        rows.append(run_variant(base, method, name, out_dir, progress))
        write_results(rows, out_dir, header, ablation_of(method))
        if on_row is not None:
            on_row(rows[-1])
    return rows


__all__ = [
    "RESULTS_JSON",
    "RESULTS_MD",
    "ablated_methods",
    "ablation_of",
    "paper_config",
    "parse_variants",
    "run_ablation",
    "run_variant",
    "variant_config",
    "write_results",
]
