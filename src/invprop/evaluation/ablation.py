"""The paper's comparisons as one tool: train each variant with the same seed, data order and config, then tabulate.

Each variant trains into ``OUT/<variant>/`` (an ordinary run directory). A finished variant is reused, an
interrupted one is resumed, so ``invprop ablate`` can be re-run until the table is complete. ``results.md`` and
``results.json`` are rewritten after every variant. The results folder and each variant's run directory are locked
while they are written (:class:`~invprop.engine.RunLock`): a second ``ablate`` of the same folder is refused.
"""

from __future__ import annotations

import datetime
import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from invprop.config import Config, from_dict, to_dict
from invprop.engine import RunLock
from invprop.engine.device import resolve_device
from invprop.errors import ConfigError
from invprop.evaluation.runs import fmt, train_or_reuse
from invprop.files import write_text_atomically
from invprop.machine import describe_machine

logger = logging.getLogger(__name__)

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: overrides applied over the shared base config."""

    description: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


#: The variants, in table order: InvP, its switches (paper Table 5), then the baselines.
VARIANTS: dict[str, Variant] = {
    "invp": Variant("InvP: propagated positives, hard positives, hard negatives"),
    "invp-no-hard-positives": Variant(
        "InvP, easiest positives instead of hardest", {"loss": {"hard_positives": False}}
    ),
    "invp-no-hard-negatives": Variant("InvP, whole bank as background", {"loss": {"hard_negatives": False}}),
    "invp-concat": Variant("InvP, the authors' concatenated positive set", {"loss": {"exact": False}}),
    "invp-gaussian": Variant("InvP, Gaussian ramp-up", {"loss": {"rampup": "gaussian"}}),
    "invp-paper-background": Variant(
        "InvP, the paper's background H_i + (M_i - P_i) in L_inv", {"loss": {"background": "paper"}}
    ),
    "knn-positives": Variant("K nearest bank rows as positives, no propagation", {"method": "knn-positives"}),
    "insdis-hard": Variant("instance discrimination, hard negatives only (L_ins)", {"method": "insdis-hard"}),
    "insdis": Variant("instance discrimination over the whole bank (Wu et al. 2018)", {"method": "insdis"}),
}


#: The instance classifier's component table (Liu et al., 2021, Table 2): MLP head, contrastive prior and hard-class
#: smoothing. The paper's first row (58.6) has the prior and the smoothing but no MLP head.
CLASSIFIER_VARIANTS: dict[str, Variant] = {
    "classifier-no-mlp": Variant(
        "instance classifier without the MLP head (linear head), prior and smoothing",
        {"method": "instance-classifier", "model": {"head": "linear"}, "classifier": {"prior": True, "smoothing": 0.2}},
    ),
    "classifier": Variant(
        "instance classifier, Gaussian init, no smoothing",
        {"method": "instance-classifier", "classifier": {"prior": False, "smoothing": 0.0}},
    ),
    "classifier-prior": Variant(
        "instance classifier, contrastive prior",
        {"method": "instance-classifier", "classifier": {"prior": True, "smoothing": 0.0}},
    ),
    "classifier-smoothing": Variant(
        "instance classifier, hard-class label smoothing",
        {"method": "instance-classifier", "classifier": {"prior": False, "smoothing": 0.2}},
    ),
    "classifier-prior-smoothing": Variant(
        "instance classifier, prior and smoothing (the full method)",
        {"method": "instance-classifier", "classifier": {"prior": True, "smoothing": 0.2}},
    ),
}


@dataclass(frozen=True)
class Ablation:
    """A method's ablation table: its variants, and the setting its paper ran them in (``invprop ablate --paper``).

    Attributes:
        variants: the rows, in table order.
        paper: overrides that give the paper's setting of the table, applied over the preset and the YAML file
            (``--set`` still wins).
        paper_source: where that setting is written.
    """

    variants: Mapping[str, Variant]
    paper: Mapping[str, Any]
    paper_source: str


#: Which table ``invprop ablate --method M`` trains.
ABLATIONS: dict[str, Ablation] = {
    "invp": Ablation(
        VARIANTS,
        {"model": {"head": "linear"}, "loss": {"temperature": 0.07}},
        "Wang et al. (2020), Sec. 4.2: every Table 5 model has a linear projection head (200 epochs), with tau 0.07 for that head (Sec. 4)",
    ),
    "instance-classifier": Ablation(
        CLASSIFIER_VARIANTS,
        {"classifier": {"temperature": 0.2}},
        "Liu et al. (2021), Table 2: tau 0.2 with a two-layer MLP head (model.head, mlp_bn unless set); the rows "
        "switch components off",
    ),
}
_ALL_VARIANTS: dict[str, Variant] = {name: v for table in ABLATIONS.values() for name, v in table.variants.items()}


def paper_config(base: Config, method: str) -> Config:
    """``base`` in the setting the paper of ``method``'s table ran it in (:attr:`Ablation.paper`)."""
    if method not in ABLATIONS:
        raise ConfigError(f"no ablation for method {method!r}; choose one of: {', '.join(ABLATIONS)}")
    return from_dict(dict(ABLATIONS[method].paper), base=base)


def parse_variants(text: str | None, method: str = "invp") -> list[str]:
    """``a,b,c`` -> validated variant names of ``method``'s table (all of them for None or ``all``)."""
    if method not in ABLATIONS:
        raise ConfigError(f"no ablation for method {method!r}; choose one of: {', '.join(ABLATIONS)}")
    table = ABLATIONS[method].variants
    if text is None or text.strip() == "all":
        return list(table)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--variants is empty; give names separated by commas, e.g. {','.join(list(table)[:2])}")
    for name in names:
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown variant {name!r} of {method}{hint}; choose from: {', '.join(table)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--variants names a variant twice: {text}")
    return names


def variant_config(base: Config, name: str) -> Config:
    return from_dict(dict(_ALL_VARIANTS[name].overrides), base=base)


def _row(name: str, cfg: Config, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "variant": name,
        "description": _ALL_VARIANTS[name].description,
        "method": cfg.method,
        "epochs": metrics.get("epochs"),
        "knn_top1": metrics.get("knn_top1"),
        "knn_top5": metrics.get("knn_top5"),
        "purity_positive": metrics.get("purity_positive"),
        "purity_hard_positive": metrics.get("purity_hard_positive"),
        "seconds": metrics.get("seconds"),
    }


def run_variant(base: Config, name: str, out_dir: Path, progress: bool | None = None) -> dict[str, Any]:
    """Train (or reuse, or resume) one variant in ``out_dir/name``; returns its table row."""
    cfg = variant_config(base, name)
    metrics = train_or_reuse(cfg, out_dir / name, f"ablate, variant {name}", progress)
    return {**_row(name, cfg, metrics), "baseline_raw_knn_top1": metrics.get("baseline_raw_knn_top1")}


def write_results(rows: Sequence[Mapping[str, Any]], out_dir: Path, header: Mapping[str, Any]) -> None:
    """``results.json`` (everything) and ``results.md`` (the table) in ``out_dir``, written atomically."""
    payload = {**header, "variants": [dict(r) for r in rows]}
    raw = next((r.get("baseline_raw_knn_top1") for r in rows if r.get("baseline_raw_knn_top1") is not None), None)
    lines = [
        f"# Ablation: {header['dataset']}, {header['epochs']} epochs",
        "",
        f"Command: `{header['command']}`  ",
        f"Machine: {header['machine']}  ",
        f"Date: {header['date']}",
        "",
        "| variant | what | kNN top-1 | kNN top-5 | positive purity | hard-positive purity | wall time s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['description']} | {fmt(r['knn_top1'])} | {fmt(r['knn_top5'])} | "
            f"{fmt(r['purity_positive'], '{:.3f}')} | {fmt(r['purity_hard_positive'], '{:.3f}')} | {fmt(r['seconds'], '{:.1f}')} |"
        )
    if raw is not None:
        lines += ["", f"Raw pixels, same weighted kNN: top-1 {raw:.4f}."]
    lines += [
        "",
        "kNN: weighted kNN (K and sigma of `eval.knn_*`) on the held-out split, fresh embeddings of the last epoch. "
        "Purity: fraction of discovered (hard) positives sharing the anchor's label, mean over the last epoch's batches "
        "(labels are never used for training). Wall time: training plus the per-epoch kNN monitor.",
    ]
    write_text_atomically(out_dir / RESULTS_JSON, json.dumps(payload, indent=2) + "\n")
    write_text_atomically(out_dir / RESULTS_MD, "\n".join(lines) + "\n")


def run_ablation(
    base: Config,
    names: Sequence[str],
    out_dir: Path,
    command: str,
    progress: bool | None = None,
    on_row: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every variant of ``names`` over ``base`` into ``out_dir`` and write the results after each one."""
    with RunLock(out_dir, command):
        return _run_variants(base, names, out_dir, command, progress, on_row)


def _run_variants(
    base: Config,
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
        rows.append(run_variant(base, name, out_dir, progress))
        write_results(rows, out_dir, header)
        if on_row is not None:
            on_row(rows[-1])
    return rows


__all__ = [
    "ABLATIONS",
    "Ablation",
    "CLASSIFIER_VARIANTS",
    "VARIANTS",
    "Variant",
    "paper_config",
    "parse_variants",
    "run_ablation",
    "run_variant",
    "write_results",
]
