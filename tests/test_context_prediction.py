"""Context prediction: nine patches per image, centred in their cells and jittered by at most the jitter asked for,
colour dropped to one channel, and each of the eight neighbours paired with the centre under its own position's
label."""

from __future__ import annotations

import torch
from torch import nn

from invprop.config import preset
from invprop.data.patches import drop_colour, windows_within_cells
from invprop.methods.method import Batch, BuildContext
from invprop.methods.pretext.context_prediction import (
    NEIGHBOURS,
    ContextPrediction,
    ContextPredictionSettings,
)


def test_windows_are_centred_in_their_cells_and_moved_by_at_most_the_jitter() -> None:
    torch.manual_seed(0)
    cells = torch.arange(300 * 12 * 12, dtype=torch.float).reshape(300, 1, 12, 12)
    windows = windows_within_cells(cells, share=0.5, jitter=2)  # 6-pixel windows, centred at offset 3
    seen = set()
    for n in range(300):
        y, x = divmod(int(windows[n, 0, 0, 0]) - n * 144, 12)
        assert 1 <= y <= 5 and 1 <= x <= 5
        assert torch.equal(windows[n, 0], cells[n, 0, y : y + 6, x : x + 6])
        seen.add((y, x))
    assert len(seen) == 25  # every offset of the 5 x 5 jitter is drawn
    centred = windows_within_cells(cells, share=0.5, jitter=0)
    assert all(int(centred[n, 0, 0, 0]) - n * 144 == 3 * 12 + 3 for n in range(300))


def test_colour_dropping_keeps_one_centred_channel_and_replaces_the_others_by_noise() -> None:
    torch.manual_seed(1)
    patches = torch.rand(50, 3, 4, 4) + 5
    dropped = drop_colour(patches)
    kept_counts = [0, 0, 0]
    for n in range(50):
        centred = [torch.allclose(dropped[n, c], patches[n, c] - patches[n, c].mean()) for c in range(3)]
        assert sum(centred) == 1
        kept = centred.index(True)
        kept_counts[kept] += 1
        for c in range(3):
            if c != kept:
                assert float(dropped[n, c].abs().max()) <= 0.5
    assert min(kept_counts) > 0  # each channel is kept for some patch
    grey = torch.rand(2, 1, 4, 4)
    assert torch.equal(drop_colour(grey), grey)


def test_each_neighbour_is_paired_with_the_centre_under_its_positions_label() -> None:
    # Cells of constant, distinct values, and an encoder that gives each patch its mean: the classifier's input
    # says which cells were paired, so the labels can be checked against the positions.
    settings = ContextPredictionSettings(patch_share=0.5, jitter_share=0.0, colour_dropping=False,
                                         normalise_patches=False, hidden_dim=4)  # fmt: skip
    encoder = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    method = ContextPrediction(settings, encoder, BuildContext(10, 1, in_channels=1))
    cells = torch.arange(9.0).view(1, 1, 3, 3)
    images = torch.cat([cells, cells + 100]).repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # 12 x 12
    seen: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen.append(args[0].detach())
        logits.append(out.detach())

    method.classifier.register_forward_hook(keep)
    out = method.training_step(Batch.of(torch.arange(2), images))
    pairs = seen[0]
    assert pairs.shape == (16, 2)
    for b in range(2):
        for k, cell in enumerate(NEIGHBOURS):
            assert pairs[8 * b + k].tolist() == [4.0 + 100 * b, float(cell) + 100 * b]
    labels = torch.arange(8).repeat(2)  # pair 8b + k: neighbour k, labelled k
    assert torch.allclose(out.loss, nn.functional.cross_entropy(logits[0], labels))


def test_cifar_patches_are_resized_to_the_presets_tile_not_to_the_image_side() -> None:
    settings = preset("cifar10", "context-prediction").context_prediction
    assert settings.tile_size == 16
    method = ContextPrediction(settings, nn.Identity(), BuildContext(10, 1, in_channels=3))
    assert method.patches(torch.rand(2, 3, 32, 32)).shape == (18, 3, 16, 16)
    untiled = ContextPrediction(ContextPredictionSettings(), nn.Identity(), BuildContext(10, 1, in_channels=3))
    assert untiled.patches(torch.rand(2, 3, 32, 32)).shape == (18, 3, 32, 32)
