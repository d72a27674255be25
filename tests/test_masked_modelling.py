"""MAE's pixel objective and random token masks against their formulas written out per patch and per image."""

from __future__ import annotations

import pytest
import torch

from invprop.core.masked_modelling import masked_patch_loss, normalised_targets, patchify
from invprop.core.token_masks import keep_tokens, random_token_mask


def test_patchify_puts_each_patchs_pixels_row_by_row_with_the_channels_last() -> None:
    images = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # two channels
    patches = patchify(images, 2)
    assert patches.shape == (1, 4, 8)
    for index, (r, c) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
        expected = [float(images[0, ch, r + i, c + j]) for i in range(2) for j in range(2) for ch in range(2)]
        assert patches[0, index].tolist() == expected
    with pytest.raises(ValueError, match="do not divide"):
        patchify(torch.zeros(1, 1, 5, 4), 2)


def test_the_targets_are_each_patch_normalised_by_its_mean_and_unbiased_variance() -> None:
    patch = [1.0, 2.0, 4.0, 9.0]
    mean = sum(patch) / 4
    var = sum((x - mean) ** 2 for x in patch) / 3
    expected = [(x - mean) / (var + 1e-6) ** 0.5 for x in patch]
    assert normalised_targets(torch.tensor([[patch]]))[0, 0].tolist() == pytest.approx(expected, rel=1e-6)


def test_the_loss_is_the_mean_squared_error_over_the_hidden_patches_only() -> None:
    torch.manual_seed(0)
    predictions, targets = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    hidden = torch.tensor([[True, False, True], [False, False, True]])
    errors = [
        sum((float(predictions[b, n, j]) - float(targets[b, n, j])) ** 2 for j in range(4)) / 4
        for b in range(2) for n in range(3) if hidden[b, n]
    ]  # fmt: skip
    assert float(masked_patch_loss(predictions, targets, hidden)) == pytest.approx(sum(errors) / 3, rel=1e-6)
    changed = predictions.clone()
    changed[~hidden] += 100.0  # what is predicted for visible patches does not count
    assert float(masked_patch_loss(changed, targets, hidden)) == pytest.approx(sum(errors) / 3, rel=1e-6)


@pytest.mark.parametrize(("tokens", "ratio", "kept"), [(16, 0.75, 4), (64, 0.75, 16), (10, 0.5, 5), (7, 0.0, 7)])
def test_a_random_mask_keeps_the_same_number_of_distinct_tokens_in_every_image(
    tokens: int, ratio: float, kept: int
) -> None:
    torch.manual_seed(0)
    mask = random_token_mask(3, tokens, ratio)
    assert mask.keep.shape == (3, kept) and mask.hidden.sum(dim=1).tolist() == [tokens - kept] * 3
    for b in range(3):
        assert len(set(mask.keep[b].tolist())) == kept
        assert not mask.hidden[b, mask.keep[b]].any()


def test_the_restore_permutation_puts_kept_then_hidden_tokens_back_in_image_order() -> None:
    torch.manual_seed(1)
    tokens = torch.randn(2, 8, 3)
    mask = random_token_mask(2, 8, 0.5)
    kept = keep_tokens(tokens, mask.keep)
    hidden_order = torch.stack(
        [torch.tensor([i for i in mask.restore.argsort(dim=1)[b].tolist()][4:]) for b in range(2)]
    )
    rest = keep_tokens(tokens, hidden_order)
    assert torch.equal(keep_tokens(torch.cat([kept, rest], dim=1), mask.restore), tokens)


def test_a_ratio_that_hides_every_token_is_refused() -> None:
    with pytest.raises(ValueError, match="hides all of 3 tokens"):
        random_token_mask(1, 3, 0.9)
