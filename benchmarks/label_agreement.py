"""How well each label-free criterion ranks a labelled compare table like its labels do, and how many labelled
images settle the order instead (docs/results.md, "Ranking without labels").

For each compare folder (``invprop compare --out DIR`` on labelled data, its rows' label-free scores measured):
Kendall's tau between every criterion and held-out kNN top-1 over the table's rows, in the criterion's direction.
Then, for m labelled held-out images (stratified, drawn ``--repeats`` times), each method's kNN top-1 on those m
images alone (5-fold cross-validated, head embeddings, the protocol of ``compare --labels``) and the tau of that
ranking against kNN top-1 on the whole held-out split. Prints Markdown.

    python benchmarks/label_agreement.py runs/compare-digits runs/compare-cifar10 --labels 20,50,100,200,500
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from common import machine, markdown_table
from invprop.engine.monitor import extract
from invprop.evaluation.criteria import CRITERIA, agreement, kendall_tau
from invprop.evaluation.few_labels import MAX_FOLDS, cross_validated, stratified_folds
from invprop.evaluation.loading import load_eval_context

#: The tau at which a few labels are said to settle a table's order.
SETTLED = 0.8


def _rows(folder: Path) -> list[dict]:
    rows = json.loads((folder / "results.json").read_text())["rows"]
    return [r for r in rows if r.get("knn_top1") is not None]


def _stratified(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` positions with every class in proportion (at least two of each)."""
    classes = labels.unique()
    per_class = max(2, count // len(classes))
    chosen = []
    for cls in classes:
        members = (labels == cls).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen)


def labels_to_settle(folder: Path, counts: list[int], repeats: int) -> list[list[str]]:
    """Per labelled-image count: the mean and lowest tau of the few-label ranking against the full one."""
    rows = _rows(folder)
    full = [r["knn_top1"] for r in rows]
    held = []
    for row in rows:
        ctx = load_eval_context(folder / row["method"])
        assert ctx.splits.test is not None
        held.append(extract(ctx.encoder, ctx.splits.test, ctx.device, ctx.cfg.data.num_workers))
    k, sigma = ctx.cfg.eval.knn_k, ctx.cfg.eval.knn_sigma
    labels = held[0].labels
    classes = int(labels.max()) + 1
    table = []
    drawn: set[int] = set()
    for count in counts:
        if len(_stratified(labels, count, torch.Generator())) in drawn:
            continue  # capped by the held-out split at a size already drawn
        taus = []
        for repeat in range(repeats):
            generator = torch.Generator().manual_seed(repeat)
            picked = _stratified(labels, count, generator)
            y = labels[picked]
            folds = stratified_folds(y, min(MAX_FOLDS, int(torch.bincount(y).min())), generator)
            few = [cross_validated(h.embeddings[picked], y, classes, folds, k, sigma, linear=False)["knn"]
                   for h in held]  # fmt: skip
            tau = kendall_tau(few, full)
            taus.append(tau if tau is not None else 0.0)
        drawn.add(len(picked))
        table.append([str(len(picked)), f"{statistics.fmean(taus):+.2f}", f"{min(taus):+.2f}"])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="labelled compare folders")
    parser.add_argument("--labels", default="20,50,100,200,500,1000", help="labelled-image counts to try")
    parser.add_argument("--repeats", type=int, default=5, help="draws of the labelled images per count")
    args = parser.parse_args()
    print(f"Machine: {machine()}\n")
    taus = {folder: agreement(_rows(folder)) for folder in args.folders}
    header = ["criterion", *(f"{f.name} ({len(_rows(f))} rows)" for f in args.folders), "mean"]
    body = []
    for name in CRITERIA:
        values = [taus[f][name] for f in args.folders]
        known = [v for v in values if v is not None]
        mean = statistics.fmean(known) if known else None
        body.append([CRITERIA.get(name).title, *("-" if v is None else f"{v:+.2f}" for v in values),
                     "-" if mean is None else f"{mean:+.2f}"])  # fmt: skip
    body.sort(key=lambda row: -float(row[-1]) if row[-1] != "-" else 9.0)
    print("Kendall tau against kNN top-1, in each criterion's direction:\n")
    print(markdown_table(header, body))
    counts = [int(c) for c in args.labels.split(",")]
    for folder in args.folders:
        print(f"\n{folder.name}: kNN top-1 of m labelled images (5-fold cross-validated) against all the labels, "
              f"{args.repeats} draws (settled: mean tau >= {SETTLED}):\n")  # fmt: skip
        print(
            markdown_table(
                ["labelled images", "mean tau", "lowest tau"], labels_to_settle(folder, counts, args.repeats)
            )
        )


if __name__ == "__main__":
    main()
