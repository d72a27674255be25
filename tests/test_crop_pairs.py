"""Multi-crop's pairing of views (invprop.core.crop_pairs), on known answers."""

from __future__ import annotations

import pytest
import torch

from invprop.core.crop_pairs import mean_over_pairs, target_pairs, view_pairs


def test_an_ordered_objective_compares_each_full_size_target_with_every_other_view() -> None:
    assert target_pairs(2) == [(0, 1), (1, 0)]  # the two directions of the published two-view loss
    assert target_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]  # no small crop is a target
    assert target_pairs(3, targets=(1,)) == [(1, 0), (1, 2)]  # MoCo without symmetry: the second view's keys only


def test_a_symmetric_objective_never_compares_two_small_crops() -> None:
    assert view_pairs(2) == [(0, 1)]
    assert view_pairs(5) == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
    assert (2, 3) not in view_pairs(5)


@pytest.mark.parametrize("bad", [lambda: target_pairs(1), lambda: target_pairs(3, targets=(3,)), lambda: view_pairs(1)])
def test_too_few_views_or_a_target_outside_them_is_refused(bad) -> None:
    with pytest.raises(ValueError):
        bad()


def test_the_mean_over_pairs_is_scaled_to_the_two_view_loss() -> None:
    losses = {
        (0, 1): torch.tensor(1.0),
        (1, 0): torch.tensor(3.0),
        (0, 2): torch.tensor(5.0),
        (1, 2): torch.tensor(7.0),
    }
    two = mean_over_pairs(lambda a, b: losses[a, b], [(0, 1), (1, 0)], scale=2)
    assert two.item() == 1.0 + 3.0  # BYOL's sum of its two directions, exactly
    four = mean_over_pairs(lambda a, b: losses[a, b], list(losses), scale=2)
    assert four.item() == 2 * (1.0 + 3.0 + 5.0 + 7.0) / 4
    assert mean_over_pairs(lambda a, b: losses[a, b], [(0, 2)]).item() == 5.0
    with pytest.raises(ValueError):
        mean_over_pairs(lambda a, b: losses[a, b], [])
