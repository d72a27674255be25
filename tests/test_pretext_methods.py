"""RotNet and the jigsaw as methods: their labels reach the loss, which parameters learn, and what they refuse."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.data.pretext import hamming_distances
from invprop.methods import METHODS, Batch, BuildContext
from invprop.settings import merge

D = 6


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, D))


def _build(name: str, **options):
    spec = METHODS.get(name)
    settings = spec.new_sections()
    merge(settings, {name: options})
    return spec.create(settings, _encoder(), BuildContext(50, D))


def test_rotnet_classifies_the_four_rotations():
    method = _build("rotnet")
    images = torch.rand(5, 1, 8, 8)
    out = method.training_step(Batch.of(torch.arange(5), images))
    out.loss.backward()
    assert set(out.terms) == {"loss_rotation", "rotation_accuracy"}
    assert all(p.grad is not None for p in (*method.encoder.parameters(), *method.classifier.parameters()))
    # The loss is the cross-entropy of the classifier on the rotated batch with labels 0..3 per block of 5.
    with torch.no_grad():
        rotated = torch.cat([torch.rot90(images, r, dims=(2, 3)) for r in range(4)])
        logits = method.classifier(method.encoder(rotated))
        expected = nn.functional.cross_entropy(logits, torch.arange(4).repeat_interleave(5))
    assert torch.allclose(out.loss, expected)


def test_rotnet_learns_rotations_of_asymmetric_images():
    method = _build("rotnet")
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    images = torch.zeros(8, 1, 8, 8)
    images[:, :, :2, :4] = 1  # a bar in the top-left: every rotation looks different
    for _ in range(60):
        out = method.training_step(Batch.of(torch.arange(8), images + 0.05 * torch.rand(8, 1, 8, 8)))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert float(out.terms["rotation_accuracy"]) == 1.0


@pytest.mark.parametrize("paper_tiles", [True, False], ids=["windows-normalised", "whole-cells"])
def test_jigsaw_labels_name_the_permutation_applied(paper_tiles: bool):
    options = {} if paper_tiles else {"tile_share": 1.0, "normalise_tiles": False}
    method = _build("jigsaw", grid=2, permutations=6, hidden_dim=8, **options)
    table = method.permutation_table
    assert table.shape == (6, 4) and int(hamming_distances(table, table).fill_diagonal_(4).min()) >= 2
    torch.manual_seed(3)
    images = torch.rand(4, 1, 8, 8)
    out = method.training_step(Batch.of(torch.arange(4), images))
    out.loss.backward()
    assert set(out.terms) == {"loss_jigsaw", "jigsaw_accuracy"}
    assert all(p.grad is not None for p in (*method.encoder.parameters(), *method.classifier.parameters()))
    # Replaying the same draws: the cross-entropy of the classifier on tiles shuffled by the label's row. With the
    # paper's tiles (the defaults), each is a 3x3 window (round(64/75 x 4)) at a drawn place in its 4x4 cell,
    # normalised on its own after resizing.
    torch.manual_seed(3)
    torch.rand(4, 1, 8, 8)
    labels = torch.randint(6, (4,))
    side = 3 if paper_tiles else 4
    top, left = (torch.randint(2, (16, 1)), torch.randint(2, (16, 1))) if paper_tiles else (torch.zeros(16, 1),) * 2
    tiles = []
    for b in range(4):
        for k, cell in enumerate(table[labels[b]].tolist()):
            row, col = divmod(cell, 2)
            y, x = 4 * row + int(top[4 * b + k]), 4 * col + int(left[4 * b + k])
            tiles.append(images[b, :, y : y + side, x : x + side])
    tiles = nn.functional.interpolate(torch.stack(tiles), size=(8, 8), mode="bilinear", align_corners=False)
    if paper_tiles:
        for t in tiles:
            t.sub_(t.mean()).div_(t.std(unbiased=False))  # one channel: each tile to mean 0, std 1
    with torch.no_grad():
        logits = method.classifier(method.encoder(tiles).reshape(4, -1))
    assert torch.allclose(out.loss, nn.functional.cross_entropy(logits, labels), atol=1e-6)


def test_jigsaw_tiles_are_the_labelled_permutation():
    from invprop.data.jigsaw import jigsaw_tiles

    method = _build("jigsaw", grid=2, permutations=6, tile_size=4, hidden_dim=8)
    images = torch.arange(64.0).reshape(1, 1, 8, 8)
    label = torch.tensor([5])
    tiles, order = jigsaw_tiles(images, 2, 4, method.permutation_table[label])
    assert torch.equal(order[0], method.permutation_table[5])
    first_cell = int(method.permutation_table[5, 0])
    row, col = divmod(first_cell, 2)
    assert torch.equal(tiles[0, 0], images[0, 0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4])


def test_permutation_set_larger_than_possible_is_refused():
    with pytest.raises(ValueError, match="more than the 24 there are"):
        _build("jigsaw", grid=2, permutations=25)
