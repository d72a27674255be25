"""The report's pictures for a user without labels: each run's nearest neighbours of the same query images, and a
2-D map of its embedding with thumbnails of the images where they fall.

A user with a folder and no labels judges an encoder by looking: do an image's neighbours look like it? Every run
of a report draws the same queries (by position in the same sample of its training images), so the grids of a
compare folder stand method beside method.
"""

from __future__ import annotations

from typing import Callable

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402
from torch import Tensor  # noqa: E402

#: A position in the report's sample of images -> that image, (H, W[, 3]) in [0, 1].
Picture = Callable[[int], np.ndarray]
#: Query images per grid, and neighbours shown per query.
QUERIES = 8
NEIGHBOURS = 8
#: The map is cut into MAP_CELLS x MAP_CELLS cells; the image nearest each occupied cell's centre is drawn there.
MAP_CELLS = 8
#: Side of a thumbnail on the map, in points of a figure drawn at the report's dpi.
THUMBNAIL_POINTS = 26.0
#: Draws the query images (the same for every run of a report).
QUERY_SEED = 0


def query_indices(count: int, images: int, seed: int = QUERY_SEED) -> Tensor:
    """``count`` distinct positions among ``images`` (all of them if fewer), drawn by ``seed``: the same for every
    run whose sample has that many images."""
    order = torch.randperm(images, generator=torch.Generator().manual_seed(seed))
    return order[: min(count, images)]


def nearest_neighbours(embeddings: Tensor, queries: Tensor, k: int) -> Tensor:
    """Each query's ``k`` nearest other images by cosine similarity, nearest first.

    Args:
        embeddings: (N, D), L2-normalised.
        queries: (Q,) int64 positions in ``embeddings``.
        k: neighbours (capped at N - 1).

    Returns:
        (Q, min(k, N - 1)) int64 positions.
    """
    sims = embeddings[queries] @ embeddings.T
    sims[torch.arange(len(queries)), queries] = float("-inf")  # an image is not its own neighbour
    return sims.topk(min(k, embeddings.shape[0] - 1), dim=1).indices


def spread_points(points: np.ndarray, cells: int = MAP_CELLS) -> list[int]:
    """Positions of points spread over a 2-D map: the point nearest the centre of each occupied cell of a
    ``cells`` x ``cells`` grid over the points' bounding box, row by row.

    Args:
        points: (N, 2).
    """
    low, high = points.min(axis=0), points.max(axis=0)
    size = np.where(high > low, (high - low) / cells, 1.0)
    cell = np.minimum(((points - low) / size).astype(int), cells - 1)
    centres = low + (cell + 0.5) * size
    distance = np.linalg.norm(points - centres, axis=1)
    chosen: dict[tuple[int, int], int] = {}
    for index, (key, gap) in enumerate(zip(map(tuple, cell.tolist()), distance)):
        if key not in chosen or gap < distance[chosen[key]]:
            chosen[key] = index
    return [chosen[key] for key in sorted(chosen)]


def neighbour_grid(picture: Picture, queries: Tensor, neighbours: Tensor, title: str) -> plt.Figure:
    """One row per query: the query, then its neighbours nearest first.

    Args:
        picture: position in the sample -> (H, W[, 3]) array in [0, 1].
        queries: (Q,) positions; neighbours: (Q, K) positions.
    """
    rows, cols = len(queries), 1 + neighbours.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols, 0.9 * rows + 0.4), squeeze=False,
                             layout="constrained")  # fmt: skip
    for row, (query, found) in enumerate(zip(queries.tolist(), neighbours.tolist())):
        for col, index in enumerate([query, *found]):
            ax = axes[row][col]
            ax.imshow(picture(index), cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                for side in ax.spines.values():  # the query framed, its neighbours bare
                    side.set_edgecolor("crimson")
                    side.set_linewidth(2.5)
            else:
                ax.axis("off")
    axes[0][0].set_title("query", fontsize=7)
    for col in range(1, cols):
        axes[0][col].set_title(str(col), fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def thumbnail_map(picture: Picture, points: np.ndarray, title: str, cells: int = MAP_CELLS) -> plt.Figure:
    """The 2-D map of an embedding: every image a grey dot, and at most ``cells``^2 of them, spread over the map,
    drawn as thumbnails where they fall.

    Args:
        picture: position -> (H, W[, 3]) array in [0, 1].
        points: (N, 2) the map's coordinates of each position.
    """
    fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    ax.scatter(points[:, 0], points[:, 1], s=3, c="lightgrey")
    for index in spread_points(points, cells):
        image = picture(index)
        zoom = THUMBNAIL_POINTS / max(image.shape[:2])
        box = OffsetImage(image, zoom=zoom, cmap="gray")
        ax.add_artist(AnnotationBbox(box, tuple(points[index]), frameon=True, pad=0.1))
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return fig


def grid_caption() -> str:
    """What the neighbour grids show."""
    return (
        f"The same {QUERIES} query images (framed) for every run, each with its {NEIGHBOURS} nearest training images "
        "by cosine similarity of the head embeddings, nearest first, run beside run. Neighbours that look like their "
        "query are what a user without labels can check."
    )
