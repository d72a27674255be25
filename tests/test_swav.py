"""SwAV as a method: codes from Sinkhorn on the full-size views, the queue, frozen prototypes, multi-crop."""

from __future__ import annotations

import torch
from torch import nn

from invprop.core.clustering import sinkhorn_knopp
from invprop.core.clustering_losses import swapped_prediction_loss
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.clustering.swav import SwAV
from invprop.settings import merge

D = 6


def _swav(**options) -> SwAV:
    torch.manual_seed(0)
    spec = METHODS.get("swav")
    settings = spec.new_sections()
    merge(settings, {"swav": {"prototypes": 5, **options}})
    method = spec.create(settings, nn.Sequential(nn.Flatten(), nn.Linear(16, D)), BuildContext(40, D))
    assert isinstance(method, SwAV)
    return method


def _step(method: SwAV, crops: list[torch.Tensor], epoch: int = 3) -> torch.Tensor:
    out = method.training_step(Batch(torch.arange(4), tuple(crops), epoch))
    method.zero_grad()
    out.loss.backward()
    method.before_optimizer_step()
    with torch.no_grad():
        for p in method.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    method.after_step([out])
    return out.loss


def test_loss_is_swapped_prediction_of_the_full_size_views_codes():
    method = _swav()
    large, small = torch.randn(8, 1, 4, 4), torch.randn(12, 1, 2, 8)  # small crops: other shapes, same pixel count
    out = method.training_step(Batch(torch.arange(4), (large, small), epoch=3))
    with torch.no_grad():
        w = nn.functional.normalize(method.prototypes.weight, dim=1)
        z = [nn.functional.normalize(method.encoder(x), dim=1) for x in (large, small)]
        views = [*z[0].split(4), *z[1].split(4)]
        scores = [v @ w.T for v in views]
        codes = [sinkhorn_knopp(scores[i], 0.05, 3) for i in range(2)]
        expected = swapped_prediction_loss(scores, codes, 0.1)
    assert len(views) == 5 and torch.allclose(out.loss, expected, atol=1e-6)


def test_prototypes_are_frozen_for_the_first_epochs_and_renormalised():
    method = _swav(freeze_prototypes_epochs=1)
    before = method.prototypes.weight.detach().clone()
    encoder_before = [p.detach().clone() for p in method.encoder.parameters()]
    _step(method, [torch.randn(8, 1, 4, 4)], epoch=1)
    assert torch.allclose(method.prototypes.weight, nn.functional.normalize(before, dim=1))  # only renormalised
    assert method.prototypes.weight.grad is None  # frozen: no gradient reaches them
    assert not all(torch.equal(a, b) for a, b in zip(method.encoder.parameters(), encoder_before))  # the rest learns
    _step(method, [torch.randn(8, 1, 4, 4)], epoch=2)
    assert not torch.allclose(method.prototypes.weight, nn.functional.normalize(before, dim=1))


def test_queue_fills_from_its_epoch_and_enters_the_codes_once_full():
    method = _swav(queue_size=8, queue_start_epoch=2)
    _step(method, [torch.randn(8, 1, 4, 4)], epoch=1)
    assert all(int(q.count) == 0 for q in method.queues)  # not yet
    images = torch.randn(8, 1, 4, 4)
    with torch.no_grad():  # the embeddings of the step, before its update
        first, second = nn.functional.normalize(method.encoder(images), dim=1).split(4)
    _step(method, [images], epoch=2)
    assert int(method.queues[0].count) == 4 and int(method.queues[1].count) == 4
    assert torch.allclose(method.queues[0].rows(), first) and torch.allclose(method.queues[1].rows(), second)
    _step(method, [torch.randn(8, 1, 4, 4)], epoch=2)
    assert int(method.queues[0].count) == 8  # full: the next codes use it
    scores = torch.randn(4, 5)
    with torch.no_grad():
        with_queue = method.codes(0, scores)
        rows = method.prototypes(method.queues[0].rows())
        expected = sinkhorn_knopp(torch.cat([rows, scores]), 0.05, 3)[-4:]
    assert torch.allclose(with_queue, expected)


def test_the_encoder_and_prototypes_learn():
    method = _swav(freeze_prototypes_epochs=0)
    out = method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 4, 4),), epoch=1))
    out.loss.backward()
    assert all(p.grad is not None for p in (*method.encoder.parameters(), method.prototypes.weight))


def test_multi_crop_training_resumes_exactly(tmp_path):
    from invprop.config import from_dict, preset
    from resume_check import assert_resumes_exactly

    cfg = from_dict({"method": "swav", "epochs": 2, "optim": {"batch_size": 64},
                     "data": {"small_crops": 2, "small_crop_size": 6, "small_crop_scale": [0.3, 0.6]}},
                    base=preset("digits", "swav"))  # fmt: skip
    assert_resumes_exactly(cfg, tmp_path)
