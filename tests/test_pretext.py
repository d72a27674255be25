"""RotNet's rotations and the jigsaw's permutation set, checked on hand-made images."""

from __future__ import annotations

import itertools

import pytest
import torch

from invprop.data.jigsaw import jigsaw_tiles
from invprop.data.pretext import hamming_distances, permutation_set, rotated_batch


def test_rotations_turn_each_image_counter_clockwise_with_their_labels():
    image = torch.arange(9.0).reshape(1, 1, 3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]
    other = -image
    rotated, labels = rotated_batch(torch.cat([image, other]))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert rotated[0, 0].tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert rotated[2, 0].tolist() == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]  # 90 degrees
    assert rotated[4, 0].tolist() == [[8, 7, 6], [5, 4, 3], [2, 1, 0]]  # 180
    assert rotated[6, 0].tolist() == [[6, 3, 0], [7, 4, 1], [8, 5, 2]]  # 270
    assert torch.equal(rotated[3], -rotated[2])  # the second image, same rotation


def test_rotations_refuse_non_square_images():
    with pytest.raises(ValueError, match="square images, got 2x3"):
        rotated_batch(torch.zeros(1, 1, 2, 3))


def test_hamming_distances_count_differing_positions():
    a = torch.tensor([[0, 1, 2, 3]])
    b = torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]])
    assert hamming_distances(a, b).tolist() == [[0, 2, 4]]


def test_permutation_set_is_far_apart():
    perms = permutation_set(10, tiles=5)
    assert perms.shape == (10, 5)
    assert all(sorted(p) == list(range(5)) for p in perms.tolist())
    distances = hamming_distances(perms, perms).fill_diagonal_(99)
    # Farthest-point selection: no better minimum exists among all 10-subsets drawn at random.
    best_random = 0
    every = torch.tensor(list(itertools.permutations(range(5))))
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        pick = every[torch.randperm(len(every), generator=g)[:10]]
        best_random = max(best_random, int(hamming_distances(pick, pick).fill_diagonal_(99).min()))
    assert int(distances.min()) >= best_random >= 3


def test_permutation_set_of_nine_tiles_has_a_large_minimal_distance():
    perms = permutation_set(30)
    assert len({tuple(p) for p in perms.tolist()}) == 30
    assert int(hamming_distances(perms, perms).fill_diagonal_(9).min()) >= 6
    assert torch.equal(perms, permutation_set(30))  # a fixed set for a seed


def test_permutation_set_refuses_more_than_exist():
    with pytest.raises(ValueError, match="more than the 6 there are"):
        permutation_set(7, tiles=3)


def test_jigsaw_tiles_follow_the_given_permutation():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    order = torch.tensor([[3, 2, 1, 0]])
    tiles, used = jigsaw_tiles(image, grid=2, tile_size=2, order=order)
    assert torch.equal(used, order)
    assert tiles[0, 0].tolist() == [[10, 11], [14, 15]]  # cell 3, the bottom-right one, comes first
    assert tiles[3, 0].tolist() == [[0, 1], [4, 5]]
    with pytest.raises(ValueError, match="order must be"):
        jigsaw_tiles(image, grid=2, order=torch.zeros(1, 3, dtype=torch.long))
