"""The report's pictures: nearest neighbours of the same queries, and the map's spread thumbnails."""

from __future__ import annotations

import numpy as np
import torch

from invprop.evaluation.report_pictures import (
    nearest_neighbours,
    neighbour_grid,
    query_indices,
    spread_points,
    thumbnail_map,
)


def test_nearest_neighbours_match_a_search_written_per_query() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(40, 5, generator=g), dim=1)
    queries = torch.tensor([0, 7, 39])
    found = nearest_neighbours(z, queries, k=4)
    for row, q in enumerate(queries.tolist()):
        others = [(float(z[q] @ z[j]), j) for j in range(40) if j != q]
        assert found[row].tolist() == [j for _, j in sorted(others, reverse=True)[:4]]
    assert nearest_neighbours(z[:3], torch.tensor([1]), k=8).shape == (1, 2)  # capped at the other images


def test_queries_are_the_same_for_every_run_of_a_sample_size_and_distinct() -> None:
    first, again = query_indices(8, 500), query_indices(8, 500)
    assert first.tolist() == again.tolist() and len(set(first.tolist())) == 8
    assert sorted(query_indices(8, 5).tolist()) == [0, 1, 2, 3, 4]


def test_spread_points_take_the_point_nearest_each_occupied_cell_centre() -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(0, 4, (300, 2)), [[0.0, 0.0], [4.0, 4.0]]])  # the corners set the box
    points = points[~((points[:, 0] >= 1) & (points[:, 0] < 2) & (points[:, 1] >= 2) & (points[:, 1] < 3))]
    chosen = spread_points(points, cells=4)
    size = 1.0  # (4 - 0) / 4 cells
    cells: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(points):
        cells.setdefault((min(int(x / size), 3), min(int(y / size), 3)), []).append(i)
    expected = []
    for key in sorted(cells):
        centre = (np.array(key) + 0.5) * size
        expected.append(min(cells[key], key=lambda i: np.linalg.norm(points[i] - centre)))
    assert chosen == expected and len(chosen) == 15  # every cell but the emptied one


def test_grids_and_maps_draw_every_image_they_are_given() -> None:
    def picture(index: int) -> np.ndarray:
        return np.full((12, 12), index / 10.0)

    grid = neighbour_grid(picture, torch.tensor([0, 1]), torch.tensor([[2, 3, 4], [5, 6, 7]]), "run")
    shown = [ax.images[0].get_array()[0, 0] for ax in grid.axes if ax.images]
    assert np.allclose(shown, [0.0, 0.2, 0.3, 0.4, 0.1, 0.5, 0.6, 0.7])  # each row: its query, then its neighbours
    atlas = thumbnail_map(picture, np.array([[0.0, 0.0], [1.0, 1.0], [0.1, 0.1]]), "run", cells=2)
    assert len(atlas.axes[0].artists) == 2  # two occupied cells, one thumbnail each
