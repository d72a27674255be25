"""CPC: the InfoNCE of each prediction against every patch of the batch, written out per prediction; the context
network sees no row below its own; the method's patches are the image's overlapping windows."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.predictive_coding import cpc_infonce_loss
from invprop.data.patches import grid_patches
from invprop.errors import ConfigError
from invprop.methods.infomax.cpc import CPC, CPCSettings
from invprop.methods.method import Batch, BuildContext
from invprop.models import build_encoder
from invprop.models.context_network import ContextNetwork


def test_each_prediction_picks_the_patch_offset_rows_below_among_every_patch_of_the_batch() -> None:
    torch.manual_seed(0)
    b, t, rows, cols, offset = 2, 3, 4, 2, 2
    predictions, targets = torch.randn(b, t, rows, cols), torch.randn(b, t, rows, cols)
    every = [(j, r, c) for j in range(b) for r in range(rows) for c in range(cols)]
    total, count = 0.0, 0
    for i in range(b):
        for r in range(rows - offset):
            for c in range(cols):
                p = predictions[i, :, r, c]
                scores = {key: float(p @ targets[key[0], :, key[1], key[2]]) for key in every}
                positive = scores[(i, r + offset, c)]
                total += -(positive - math.log(sum(math.exp(v) for v in scores.values())))
                count += 1
    assert float(cpc_infonce_loss(predictions, targets, offset)) == pytest.approx(total / count, rel=1e-5)
    with pytest.raises(ValueError, match="offset must be between 1 and the grid's 4 rows minus 1, got 4"):
        cpc_infonce_loss(predictions, targets, 4)


def test_the_context_at_a_row_sees_no_row_below_it() -> None:
    torch.manual_seed(1)
    net = ContextNetwork(3, 6, blocks=3)
    x = torch.randn(2, 3, 6, 4)
    for row in range(5):
        changed = x.clone()
        changed[:, :, row + 1 :] = torch.randn_like(changed[:, :, row + 1 :])
        assert torch.equal(net(x)[:, :, : row + 1], net(changed)[:, :, : row + 1])
    changed = x.clone()
    changed[:, :, 0] += 1
    assert not torch.equal(net(x)[:, :, 3], net(changed)[:, :, 3])  # each block reaches one row further up


def test_the_patches_are_the_images_overlapping_windows_and_a_short_grid_is_refused() -> None:
    torch.manual_seed(2)
    settings = CPCSettings(patch_share=0.25, colour_dropping=False, flip=False)
    method = CPC(settings, build_encoder("small_convnet", "linear", 8), BuildContext(10, 8))
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(method.patch_grid(images), grid_patches(images, (8, 8), (4, 4)))  # a 7 x 7 grid
    out = method.training_step(Batch.of(torch.arange(2), images))
    assert torch.isfinite(out.loss)
    short = CPC(CPCSettings(patch_share=0.5, offsets=[3]), build_encoder("small_convnet", "linear", 8),
                BuildContext(10, 8))  # fmt: skip
    with pytest.raises(ConfigError, match=r"cpc.offsets=\[3\] reach beyond the 3 rows of patches"):
        short.training_step(Batch.of(torch.arange(2), images))
