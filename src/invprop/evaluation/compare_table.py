"""The table of ``invprop compare``: ``results.json`` and ``results.md``, ranked by kNN top-1 where the data has
labels, else by the default label-free criterion, else not at all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from invprop.evaluation.ablation import RESULTS_JSON, RESULTS_MD
from invprop.evaluation.criteria import (
    CRITERIA,
    DEFAULT_AGREEMENT,
    DEFAULT_CRITERION,
    LABELLED_RANKING,
    SCORES_KEY,
    WEAK_AGREEMENT,
    Agreement,
    Criterion,
    agreement,
    ranked_by,
)
from invprop.evaluation.runs import fmt
from invprop.files import write_text_atomically

Row = Mapping[str, Any]

#: The label-free columns of results.md, head then backbone (every criterion stays in results.json).
SHOWN_CRITERIA = ("rankme", "lidar", "cl", "id", "clid", "alignment", "uniformity")


@dataclass(frozen=True)
class Ranking:
    """What orders a table.

    Attributes:
        by: ``knn_top1``, a criterion's name, or None (no rank).
        keys: each row's sort key, larger first (None: the row is not ranked).
        note: the line of results.md that says so.
    """

    by: str | None
    keys: list[float | None]
    note: str


def ranking_of(rows: Sequence[Row], labels: Mapping[str, Any] | None = None) -> Ranking:
    """kNN top-1 where any row has it (from ``--labels`` when given); else the default label-free criterion (saying
    how well it agreed with labels where that was measured); else no rank."""
    knn = [r.get(LABELLED_RANKING) for r in rows]
    if any(v is not None for v in knn) and labels is not None:
        return Ranking(LABELLED_RANKING, knn, (
            f"Ranked by kNN top-1 of the {labels['images']} labelled images of {labels['file']} ({labels['classes']} "
            f"classes, {labels['folds']}-fold cross-validated): the kNN, linear and untrained columns come from "
            "them alone; the label-free criteria below are beside them."
        ))  # fmt: skip
    if any(v is not None for v in knn):
        return Ranking(LABELLED_RANKING, knn, "Ranked by held-out kNN top-1 (labels).")
    keys = ranked_by(rows, DEFAULT_CRITERION)
    if any(v is not None for v in keys):
        criterion = CRITERIA.get(DEFAULT_CRITERION)
        return Ranking(DEFAULT_CRITERION, keys, agreement_note(criterion, DEFAULT_AGREEMENT))
    return Ranking(None, [None] * len(rows), "Not ranked: the data has no labels and no held-out images to score.")


def agreement_note(criterion: Criterion, measured: Agreement | None) -> str:
    """The line above a table ranked without labels: the criterion, and how well it agreed with labels where that
    was measured (weak agreement says so and points to ``--labels``)."""
    note = f"Ranked without labels by {criterion.title} ({criterion.source})"
    if measured is None:
        return note + ": its agreement with labels has not been measured yet; read the order as a hint."
    note += (
        f", the criterion that agreed best with kNN top-1 where labels were known: Kendall tau {measured.tau:+.2f} "
        f"on {measured.table}."
    )
    if measured.tau < WEAK_AGREEMENT:
        note += (
            f" That agreement is weak (below {WEAK_AGREEMENT}): read the order as a hint. Labelling "
            f"{measured.labels_to_settle} and passing them with --labels ranks by them instead."
        )
    return note


def _order(rows: Sequence[Row], ranking: Ranking) -> list[tuple[str, Row]]:
    """``(rank cell, row)`` in table order: ranked rows by their key, then diverged rows (ranked last when anything
    ranks), then the others in the given order, unranked."""
    ranked = sorted((i for i, k in enumerate(ranking.keys) if k is not None), key=lambda i: -(ranking.keys[i] or 0.0))
    unscored = [i for i, k in enumerate(ranking.keys) if k is None]
    if ranking.by is not None:
        ranked += [i for i in unscored if rows[i].get("diverged")]
    rest = [i for i in unscored if i not in ranked]
    return [(str(place), rows[i]) for place, i in enumerate(ranked, start=1)] + [("", rows[i]) for i in rest]


def _criteria_lines(rows: Sequence[Row], order: list[tuple[str, Row]]) -> list[str]:
    """The label-free scores of every row, and (with labels) each criterion's agreement with kNN top-1."""
    if not any(r.get(SCORES_KEY) for r in rows):
        return []
    names = [f"{name}{suffix}" for suffix in ("", "_backbone") for name in SHOWN_CRITERIA]
    values = {name: dict(zip((r["method"] for r in rows), CRITERIA.get(name).values(rows))) for name in names}
    lines = [
        "",
        "Label-free criteria (held-out images, no labels; head, then backbone):",
        "",
        "| method | " + " | ".join(CRITERIA.get(n).title for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for _, r in order:
        lines.append(f"| {r['method']} | " + " | ".join(fmt(values[n][r["method"]], "{:.3f}") for n in names) + " |")
    taus = agreement(rows)
    measured = sorted(((tau, n) for n, tau in taus.items() if tau is not None), reverse=True)
    if measured:
        listed = ", ".join(f"{CRITERIA.get(n).title} {tau:+.2f}" for tau, n in measured)
        lines += ["", f"Agreement with kNN top-1 on this table (Kendall tau, in each criterion's own direction; "
                  f"{len([r for r in rows if r.get(LABELLED_RANKING) is not None])} rows): {listed}."]  # fmt: skip
    return lines


def write_comparison(rows: Sequence[Row], out_dir: Path, header: Mapping[str, Any]) -> None:
    """``results.json`` (everything) and ``results.md`` (the ranked table) in ``out_dir``."""
    ranking = ranking_of(rows, header.get("labels"))
    payload = {**header, "kind": "compare", "ranked_by": ranking.by, "rows": [dict(r) for r in rows]}
    order = _order(rows, ranking)
    raw = next((r["baseline_raw_knn_top1"] for r in rows if r.get("baseline_raw_knn_top1") is not None), None)
    budget = header.get("budget_seconds")
    length = f"{header['epochs']} epochs" if budget is None else f"{budget:.0f} s of training each"
    lines = [
        f"# Compare: {header['dataset']}, {length}, seed {header['seed']}",
        "",
        f"Command: `{header['command']}`  ",
        f"Machine: {header['machine']}  ",
        f"Date: {header['date']}",
        "",
        ranking.note,
        "",
        "| rank | method | kNN top-1 | kNN top-5 | untrained kNN top-1 | backbone kNN top-1 | untrained backbone | "
        "linear top-1 | epochs | s/epoch | total s | images/s | peak memory MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for place, r in order:
        memory = None if r.get("peak_memory_bytes") is None else r["peak_memory_bytes"] / 2**20
        knn = f"{r['diverged']} (non-finite loss)" if r.get("diverged") else fmt(r["knn_top1"])
        lines.append(
            f"| {place} | {r['method']} | {knn} | {fmt(r['knn_top5'])} | {fmt(r['untrained_knn_top1'])} | "
            f"{fmt(r.get('knn_backbone_top1'))} | {fmt(r.get('untrained_knn_backbone_top1'))} | {fmt(r['linear_top1'])} | "
            f"{r['epochs']} | {fmt(r['seconds_per_epoch'], '{:.2f}')} | {fmt(r['seconds'], '{:.1f}')} | "
            f"{fmt(r['images_per_second'], '{:.0f}')} | {fmt(memory, '{:.0f}')} |"
        )
    if raw is not None:
        lines += ["", f"Raw pixels, same weighted kNN: top-1 {raw:.4f}."]
    lines += _criteria_lines(rows, order)
    if budget is not None:
        lines += ["", f"Budget: {budget:.0f} s per method; each method's epochs are those a probe on this machine found "
                  "to fit (training, epoch starts and the kNN monitor; the linear probe and untrained floors are extra). "
                  "Total s is what the training took."]  # fmt: skip
    if any(r.get("diverged") for r in rows):
        lines += ["", "Diverged: training produced a non-finite loss with these settings; the row keeps its untrained "
                  "encoder's floors and ranks last, and its run directory the last good checkpoint if an epoch had finished."]  # fmt: skip
    lines += [
        "",
        "kNN: weighted kNN (`eval.knn_k`, `eval.knn_sigma`) of the head embeddings on the held-out split after the last "
        "epoch. Backbone kNN: the same on the backbone features (what the pretext and clustering "
        "methods' heads serve less well). Linear: the `eval linear` protocol on the frozen backbone. Untrained: the same encoder as initialised. "
        "Times: training plus the per-epoch kNN monitor; images/s = training images x epochs / total s. Peak memory: "
        "CUDA tensors on a GPU, the process's resident set on the CPU (of the last training segment).",
    ]
    write_text_atomically(out_dir / RESULTS_JSON, json.dumps(payload, indent=2) + "\n")
    write_text_atomically(out_dir / RESULTS_MD, "\n".join(lines) + "\n")


__all__ = ["Ranking", "SHOWN_CRITERIA", "ranking_of", "write_comparison"]
