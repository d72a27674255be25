"""``invprop report RUN_DIR [RUN_DIR ...]``: one self-contained HTML page (plus PNGs) comparing runs.

Figures: the loss and the kNN accuracy over epochs for every run; each run's method's own curves and image figures,
as its spec declares them (:attr:`invprop.methods.MethodSpec.curves` and ``figures``: e.g. InvP's loss terms, its
positive purity and its anchors with their easiest and hardest discovered positives, Fig. 2b; VICReg's three
terms); similarities of each image's 5 nearest same-class and 5 nearest different-class neighbours with their
overlap (InvP's Fig. 2a); a 2-D t-SNE map coloured by label; for every run, the nearest neighbours of the same
query images and its map with thumbnails (:mod:`invprop.evaluation.report_pictures`), run beside run; RankMe per
epoch, with a warning line for a run whose embeddings collapsed. Unlabelled runs get all but the similarity figure.
Every image is embedded in the HTML as base64, so it opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from invprop.config import method_spec  # noqa: E402
from invprop.data import IndexedDataset  # noqa: E402
from invprop.data.datasets import take_subset  # noqa: E402
from invprop.engine import CHECKPOINT_NAME, HISTORY_NAME, load_checkpoint  # noqa: E402
from invprop.engine.monitor import collapse_warning, extract  # noqa: E402
from invprop.engine.run_settings import read_run_settings  # noqa: E402
from invprop.errors import ConfigError, InvpropError  # noqa: E402
from invprop.evaluation.compare import compare_rows  # noqa: E402
from invprop.evaluation.loading import EvalContext, load_eval_context  # noqa: E402
from invprop.evaluation.report_pictures import (  # noqa: E402
    NEIGHBOURS,
    QUERIES,
    grid_caption,
    nearest_neighbours,
    neighbour_grid,
    query_indices,
    thumbnail_map,
)
from invprop.evaluation.report_rows import method_rows, rows_figure  # noqa: E402
from invprop.evaluation.report_trackers import send_figures  # noqa: E402
from invprop.files import make_folder, write_bytes_atomically, write_text_atomically  # noqa: E402
from invprop.methods import METHODS, Curve  # noqa: E402
from invprop.methods.spec import Cell, FigureInputs  # noqa: E402

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
#: Neighbours per image in the similarity-distribution figure (paper Fig. 2a).
SIMILARITY_NEIGHBORS = 5
#: Images drawn for the similarity figure and the t-SNE map (keeps both fast on a CPU).
MAX_IMAGES = 2000
HISTOGRAM_BINS = 40
FIGURE_DPI = 100
SAMPLE_SEED = 0
#: The curves of every run, whatever its method; each method adds its own (its spec's ``curves``).
SHARED_CURVES = (
    Curve("loss", ("loss",)),
    Curve("held-out kNN accuracy", ("knn_top1", "knn_backbone_top1"), "top-1"),
    Curve("effective rank of the held-out embeddings (RankMe)", ("rankme", "rankme_backbone"), "RankMe"),
    Curve("online linear probe", ("online_probe_top1", "online_probe_train_top1"), "top-1"),
)
NEIGHBOUR_GROUP = "nearest neighbours of the same queries"
MAP_GROUP = "maps with thumbnails"
GROUP_CAPTIONS = {
    NEIGHBOUR_GROUP: grid_caption(),
    MAP_GROUP: f"Each run's t-SNE map (up to {MAX_IMAGES} training images as dots), with the image nearest the "
    "centre of each occupied cell of a grid over the map drawn where it falls: what sits together in the embedding.",
}


@dataclass
class Figure:
    """One PNG of the report; figures of the same ``group`` stand side by side under the group's heading."""

    title: str
    filename: str
    png: bytes
    caption: str
    group: str = ""


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / HISTORY_NAME
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} is not a run directory (no {HISTORY_NAME}); pass the folder `invprop train` wrote"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves_figure(
    histories: dict[str, list[dict[str, Any]]], keys: Sequence[str], title: str, ylabel: str
) -> bytes | None:
    """One panel per key, one line per run, as a PNG; None when no run logged any of ``keys``."""
    fig = curves_plot(histories, keys, title, ylabel)
    return None if fig is None else _png(fig)


def curves_plot(
    histories: dict[str, list[dict[str, Any]]], keys: Sequence[str], title: str, ylabel: str
) -> plt.Figure | None:
    """The figure of :func:`curves_figure`, laid out so that its title clears the panels' titles."""
    present = [k for k in keys if any(k in r for h in histories.values() for r in h)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], present):
        for name, history in histories.items():
            points = [(r["epoch"], r[key]) for r in history if key in r and r[key] is not None]
            if points:
                ax.plot(*zip(*points), label=name, marker="." if len(points) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def neighbor_similarities(embeddings: Tensor, labels: Tensor, k: int = SIMILARITY_NEIGHBORS) -> tuple[Tensor, Tensor]:
    """Cosine similarities of each image's ``k`` nearest same-class and ``k`` nearest other-class images.

    Args:
        embeddings: (N, D) L2-normalised.
        labels: (N,) int64, all known.

    Returns:
        ``(same, different)``, each (N, k) (fewer columns if a class is that small).
    """
    sims = embeddings @ embeddings.T
    sims.fill_diagonal_(float("-inf"))
    same_class = labels[:, None] == labels[None, :]
    k_same = min(k, int(same_class.sum(1).min()) - 1)
    k_diff = min(k, int((~same_class).sum(1).min()))
    same = sims.masked_fill(~same_class, float("-inf")).topk(max(k_same, 0), dim=1).values
    different = sims.masked_fill(same_class, float("-inf")).topk(max(k_diff, 0), dim=1).values
    return same, different


def histogram_overlap(a: Tensor, b: Tensor, bins: int = HISTOGRAM_BINS) -> float:
    """Shared area of the two normalised histograms on [-1, 1] (0 = disjoint, 1 = identical)."""
    ha = torch.histc(a.float().flatten(), bins=bins, min=-1, max=1)
    hb = torch.histc(b.float().flatten(), bins=bins, min=-1, max=1)
    return float(torch.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def similarity_figure(runs: dict[str, tuple[Tensor, Tensor]]) -> tuple[bytes, dict[str, float]]:
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.2), squeeze=False)
    overlaps = {}
    for ax, (name, (same, different)) in zip(axes[0], runs.items()):
        overlaps[name] = histogram_overlap(same, different)
        edges = np.linspace(-1, 1, HISTOGRAM_BINS + 1)
        ax.hist(
            same.flatten().numpy(),
            bins=edges,
            alpha=0.6,
            density=True,
            label=f"{SIMILARITY_NEIGHBORS} nearest same class",
        )
        ax.hist(
            different.flatten().numpy(),
            bins=edges,
            alpha=0.6,
            density=True,
            label=f"{SIMILARITY_NEIGHBORS} nearest other class",
        )
        ax.set_title(f"{name}\noverlap {overlaps[name]:.3f}")
        ax.set_xlabel("cosine similarity")
    axes[0][0].legend(fontsize=8)
    return _png(fig), overlaps


def _as_picture(image: Tensor) -> np.ndarray:
    """A (C, H, W) normalised image -> (H, W[, 3]) in [0, 1], min-max stretched for display; an image of other than
    1 or 3 bands is shown as the mean of its bands."""
    x = image.float()
    if x.shape[0] not in (1, 3):
        x = x.mean(dim=0, keepdim=True)
    x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def image_grid(dataset: Any, rows: Sequence[Sequence[Cell]], title: str) -> bytes:
    """Training images in a grid (a method's figure, :class:`invprop.methods.GridFigure`), each under its caption,
    as a PNG."""
    cols = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols, 1.2 * len(rows)), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax_row, cells in zip(axes, rows):
        for col, ax in enumerate(ax_row):
            ax.axis("off")
            cell = cells[col] if col < len(cells) else None
            if cell is None:
                continue
            index, caption = cell
            ax.imshow(_as_picture(dataset[index][1]), cmap="gray")
            ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def method_figures(name: str, ctx: EvalContext, dataset: IndexedDataset, first: int) -> list[Figure]:
    """The image figures the run's method declares (its spec's ``figures``), drawn for run ``name``."""
    spec = ctx.cfg.spec
    if not spec.figures and not spec.image_rows:
        return []

    def embed(indices: Tensor) -> Tensor:
        chosen = IndexedDataset(take_subset(dataset.source, indices.tolist()), dataset.transform)
        return nn.functional.normalize(extract(ctx.encoder, chosen, ctx.device).embeddings, dim=1)

    assert ctx.checkpoint is not None
    state = load_checkpoint(ctx.checkpoint)["model"]
    inputs = FigureInputs(spec.own(ctx.cfg.method_settings), state, len(dataset), embed)
    figures: list[Figure] = []
    for figure in spec.figures:
        rows = figure.grid(inputs)
        if rows:
            png = image_grid(dataset, rows, f"{figure.title} of {name}")
            filename = f"{_slug(figure.title)}-{first + len(figures)}.png"
            figures.append(Figure(f"{figure.title} of {name}", filename, png, figure.caption))
    for made, made_rows in method_rows(ctx, state):
        png = _png(rows_figure(made_rows, f"{made.title} of {name}"))
        filename = f"{_slug(made.title)}-{first + len(figures)}.png"
        figures.append(Figure(f"{made.title} of {name}", filename, png, made.caption))
    return figures


def tsne_points(embeddings: Tensor, seed: int = SAMPLE_SEED) -> np.ndarray:
    """The (N, 2) t-SNE map of (N, D) embeddings."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, embeddings.shape[0] // 4)))
    points: np.ndarray = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings.numpy())
    return points


def tsne_figure(runs: dict[str, tuple[np.ndarray, Tensor]]) -> bytes:
    """Each run's t-SNE points (:func:`tsne_points`), coloured by label when every image has one."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4), squeeze=False)
    for ax, (name, (points, labels)) in zip(axes[0], runs.items()):
        known = labels >= 0
        colours = labels.numpy() if bool(known.all()) else None
        ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10" if colours is not None else None, s=4)
        ax.set_title(name)
        ax.set_xticks([]), ax.set_yticks([])
    return _png(fig)


def _sample(n: int, limit: int, seed: int = SAMPLE_SEED) -> Tensor:
    if n <= limit:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


#: The columns of a compare table in the report: (key in a row, heading, format).
COMPARE_COLUMNS = (
    ("method", "method", "{}"),
    ("knn_top1", "kNN top-1", "{:.4f}"),
    ("linear_top1", "linear top-1", "{:.4f}"),
    ("untrained_knn_top1", "untrained kNN top-1", "{:.4f}"),
    ("knn_backbone_top1", "backbone kNN top-1", "{:.4f}"),
    ("seconds_per_epoch", "s/epoch", "{:.2f}"),
    ("images_per_second", "images/s", "{:.0f}"),
)


def expand_compare_folders(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, list[dict[str, Any]]]]]:
    """Run directories of ``paths``, where a compare folder stands for its methods' runs; and each compare folder
    with its rows (for the report's table)."""
    runs: list[Path] = []
    tables: list[tuple[Path, list[dict[str, Any]]]] = []
    for path in paths:
        rows = compare_rows(path)
        if rows is None:
            runs.append(path)
        else:
            # a run that diverged in its first epoch has no curves to show; its row still goes into the table
            folders = [path / row.get("run", row["method"]) for row in rows]  # "run": the row's folder
            runs += [
                folder
                for folder, row in zip(folders, rows, strict=True)
                if not row.get("diverged") or (folder / HISTORY_NAME).is_file()
            ]
            tables.append((path, rows))
    return runs, tables


def _compare_table(folder: Path, rows: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in COMPARE_COLUMNS)
    body = []
    for row in sorted(rows, key=lambda r: -(r.get("knn_top1") or -1.0)):
        cells = []
        for key, _, pattern in COMPARE_COLUMNS:
            value = row.get(key)
            text = "-" if value is None else pattern.format(value)
            if key == "knn_top1" and row.get("diverged"):
                text = str(row["diverged"])
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<h2>compare: {html.escape(str(folder))}</h2><table><tr>{head}</tr>{''.join(body)}</table>"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def curve_filename(curve: Curve) -> str:
    """The PNG of a curve figure: ``curves-<its title, slugged>.png``."""
    return f"curves-{_slug(curve.title)}.png"


def _unique(filename: str, taken: set[str]) -> str:
    """``filename``, or with ``-2``, ``-3``, ... before its suffix when another figure already has it."""
    stem, _, suffix = filename.rpartition(".")
    candidate, count = filename, 1
    while candidate in taken:
        count += 1
        candidate = f"{stem}-{count}.{suffix}"
    taken.add(candidate)
    return candidate


def _method_of(run_dir: Path) -> str | None:
    """The method a run directory trained (from its config.yaml, else its checkpoint), if it can be read."""
    method: Any = None
    try:
        settings = read_run_settings(run_dir)
        method = settings.values.get("method") if settings is not None else None
    except (OSError, ValueError, InvpropError):
        pass
    if method is None and (run_dir / CHECKPOINT_NAME).is_file():
        try:
            method = load_checkpoint(run_dir / CHECKPOINT_NAME)["config"].get("method")
        except (OSError, ValueError, KeyError, InvpropError):
            return None
    return method if isinstance(method, str) and method in METHODS else None


def report_curves(run_dirs: Sequence[Path]) -> list[Curve]:
    """The curves of a report: :data:`SHARED_CURVES`, then each run's method's own (its spec's), once each."""
    curves = list(SHARED_CURVES)
    for run_dir in run_dirs:
        method = _method_of(run_dir)
        for curve in method_spec(method).curves if method else ():
            if curve not in curves:
                curves.append(curve)
    return curves


def build_report(run_dirs: Sequence[Path], out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` and one PNG per figure; returns the HTML path. A compare folder among
    ``run_dirs`` adds its table and puts the curves of all its methods on the same plots."""
    run_dirs, tables = expand_compare_folders(run_dirs)
    if not run_dirs:
        raise ConfigError("give at least one run directory")
    names = [p.name or str(p) for p in run_dirs]
    if len(set(names)) != len(names):
        names = [str(p) for p in run_dirs]
    histories = {name: read_history(path) for name, path in zip(names, run_dirs)}
    figures: list[Figure] = []
    taken: set[str] = set()
    for curve in report_curves(run_dirs):
        png = curves_figure(histories, curve.keys, curve.title, curve.ylabel)
        if png is not None:
            caption = f"{', '.join(curve.keys)} per epoch, one line per run."
            figures.append(Figure(curve.title, _unique(curve_filename(curve), taken), png, caption))

    similarity_runs: dict[str, tuple[Tensor, Tensor]] = {}
    maps: dict[str, tuple[np.ndarray, Tensor]] = {}
    pictures: list[Figure] = []
    for name, run_dir in zip(names, run_dirs):
        if not (run_dir / CHECKPOINT_NAME).is_file():
            logger.warning("%s has no %s; only its curves are shown", run_dir, CHECKPOINT_NAME)
            continue
        ctx = load_eval_context(run_dir, require_labels=False)
        dataset = ctx.splits.train_plain
        assert dataset is not None
        keep = _sample(len(dataset), MAX_IMAGES)
        sample = IndexedDataset(take_subset(dataset.source, keep.tolist()), dataset.transform)
        out = extract(ctx.encoder, sample, ctx.device)
        embeddings = nn.functional.normalize(out.embeddings, dim=1)
        maps[name] = (tsne_points(embeddings), out.labels)
        if bool((out.labels >= 0).all()):
            similarity_runs[name] = neighbor_similarities(embeddings, out.labels)
        figures += method_figures(name, ctx, dataset, len(figures))
        pictures += run_pictures(name, sample, embeddings, maps[name][0], taken)
    if similarity_runs:
        png, overlaps = similarity_figure(similarity_runs)
        text = ", ".join(f"{k}: {v:.3f}" for k, v in overlaps.items())
        figures.append(Figure("similarity of nearest same-class and other-class neighbours", "similarities.png", png,
                              f"Each image's {SIMILARITY_NEIGHBORS} nearest same-class and other-class images (paper Fig. 2a). "
                              f"Histogram overlap (lower separates classes better): {text}."))  # fmt: skip
    if maps:
        figures.append(Figure("t-SNE map of the embeddings", "tsne.png", tsne_figure(maps),
                              f"Up to {MAX_IMAGES} training images per run, coloured by label when labelled."))  # fmt: skip
    figures += pictures
    tables_html = [_compare_table(folder, rows) for folder, rows in tables]
    html = write_html(figures, histories, out_dir, tables_html, collapse_warnings(histories))
    send_figures(run_dirs, [out_dir / figure.filename for figure in figures])
    return html


def run_pictures(
    name: str, sample: IndexedDataset, embeddings: Tensor, points: np.ndarray, taken: set[str]
) -> list[Figure]:
    """Run ``name``'s neighbour grid (the report's queries) and its t-SNE map with thumbnails."""

    def picture(index: int) -> np.ndarray:
        return _as_picture(sample[index][1])

    queries = query_indices(QUERIES, len(sample))
    found = nearest_neighbours(embeddings, queries, NEIGHBOURS)
    grid = _png(neighbour_grid(picture, queries, found, name))
    atlas = _png(thumbnail_map(picture, points, name))
    return [
        Figure(f"nearest neighbours: {name}", _unique(f"neighbours-{_slug(name)}.png", taken), grid,
               f"{name}: {len(queries)} queries, {found.shape[1]} neighbours each", NEIGHBOUR_GROUP),
        Figure(f"map with thumbnails: {name}", _unique(f"map-{_slug(name)}.png", taken), atlas,
               f"{name}: t-SNE of the embeddings, images drawn where they fall", MAP_GROUP),
    ]  # fmt: skip


def collapse_warnings(histories: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """One line per run whose latest RankMe says its embeddings collapsed."""
    warnings = []
    for name, history in histories.items():
        latest = next((r for r in reversed(history) if "rankme" in r), None)
        said = None if latest is None else collapse_warning(latest)
        if said is not None:
            warnings.append(f"{name}, {said}")
    return warnings


def write_html(
    figures: Sequence[Figure],
    histories: dict[str, list[dict[str, Any]]],
    out_dir: Path,
    tables: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> Path:
    make_folder(out_dir)
    rows = []
    for name, history in histories.items():
        last = history[-1] if history else {}
        top1 = next((r["knn_top1"] for r in reversed(history) if "knn_top1" in r), None)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{last.get('epoch', '-')}</td>"
            f"<td>{'-' if top1 is None else f'{top1:.4f}'}</td><td>{last.get('seconds', '-')}</td></tr>"
        )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>invprop report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}img{max-width:100%}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        ".group{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.group figure{margin:0;max-width:48%}"
        ".warning{color:#a00;font-weight:bold}</style></head><body>",
        "<h1>invprop report</h1>",
        *(f"<p class='warning'>{html.escape(w)}</p>" for w in warnings),
        "<table><tr><th>run</th><th>epochs</th><th>kNN top-1</th><th>seconds</th></tr>" + "".join(rows) + "</table>",
        *tables,
    ]
    group = ""
    for figure in figures:
        write_bytes_atomically(out_dir / figure.filename, figure.png)
        data = base64.b64encode(figure.png).decode("ascii")
        image = f"<img alt='{html.escape(figure.title)}' src='data:image/png;base64,{data}'>"
        if figure.group != group:
            parts.append("</div>" if group else "")
            if figure.group:
                parts.append(f"<h2>{html.escape(figure.group)}</h2><p>{html.escape(GROUP_CAPTIONS[figure.group])}</p>"
                             "<div class='group'>")  # fmt: skip
            group = figure.group
        if group:
            parts.append(f"<figure>{image}<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
        else:
            parts.append(f"<h2>{html.escape(figure.title)}</h2>{image}<p>{html.escape(figure.caption)}</p>")
    parts.append("</div></body></html>" if group else "</body></html>")
    return write_text_atomically(out_dir / REPORT_NAME, "\n".join(parts))
