"""The two-view methods with multi-crop's small crops: every registered two-view method that takes small crops
compares the views :mod:`invprop.core.crop_pairs` says, with its own two-view objective, and with two views its loss
is the published one.

The oracles run each pair through the method's modules one view at a time (a BatchNorm-free encoder, the methods'
own BatchNorm in eval mode: a view's output does not depend on what it is batched with)."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import Tensor

from invprop.core.contrastive_losses import batch_keys_loss, info_nce_queue_loss, nnclr_loss
from invprop.core.crop_pairs import mean_over_pairs, target_pairs, view_pairs
from invprop.core.distillation_losses import byol_loss, negative_cosine
from invprop.methods import METHODS, Batch, Method
from invprop.methods.two_views import TwoViewMethod
from unit_methods import N, unit_method

B, SMALL = 6, 3

#: A method, the (target, other) views of a pair -> that pair's loss, one view at a time.
PairLoss = Callable[[Method, Tensor, Tensor], Tensor]


def _byol(m: Method, target: Tensor, other: Tensor) -> Tensor:
    return byol_loss(m.predictor(m.encoder(other)), m.target(target))


def _simsiam(m: Method, target: Tensor, other: Tensor) -> Tensor:
    return negative_cosine(m.predictor(m.encoder(other)), m.encoder(target))


def _moco(m: Method, target: Tensor, other: Tensor) -> Tensor:
    return info_nce_queue_loss(m.encoder(other), m.key_encoder(target), m.queue.rows(), m.options.temperature)


def _mocov3(m: Method, target: Tensor, other: Tensor) -> Tensor:
    return batch_keys_loss(m.predictor(m.encoder(other)), m.target(target), m.options.temperature)


def _nnclr(m: Method, target: Tensor, other: Tensor) -> Tensor:
    return nnclr_loss(m._neighbours(m.encoder(target)), m.predictor(m.encoder(other)), m.options.temperature)


#: The ordered objectives: each pair's loss and the scale that makes two views the published loss.
ORDERED: dict[str, tuple[PairLoss, float]] = {
    "byol": (_byol, 2.0), "directpred": (_byol, 2.0), "simsiam": (_simsiam, 1.0), "moco": (_moco, 1.0),
    "pcl": (_moco, 1.0), "mocov3": (_mocov3, 2.0), "nnclr": (_nnclr, 1.0),
}  # fmt: skip
#: The symmetric objectives: a pair's loss is the method's own two-view step on the pair.
SYMMETRIC = {"simclr", "simclr-v2", "barlowtwins", "vicreg", "invariant-spreading", "drlim"}


def _two_view_methods_with_small_crops() -> list[str]:
    return [name for name in METHODS if METHODS.get(name).multi_crop and isinstance(unit_method(name), TwoViewMethod)]


def test_every_two_view_method_with_small_crops_has_an_oracle_here() -> None:
    assert set(_two_view_methods_with_small_crops()) == set(ORDERED) | SYMMETRIC


def _views(seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(B, 1, 8, 8, generator=g) for _ in range(2 + SMALL)]


def _batch(views: list[Tensor]) -> Batch:
    """Full-size views as the first group, the rest as the small crops' group (8 x 8 too: the unit encoder takes
    any size, and equal sizes keep the oracle's views the method's)."""
    groups = (torch.cat(views[:2]),) + ((torch.cat(views[2:]),) if len(views) > 2 else ())
    return Batch(torch.arange(B) % N, groups, epoch=2, step=1)


def _method(name: str) -> Method:
    method = unit_method(name)
    if hasattr(method, "queue"):  # a queue of earlier keys, so that the negatives are not zeros
        method.queue.enqueue(torch.nn.functional.normalize(torch.randn(method.queue.size, 8), dim=1))
    if hasattr(method, "support"):
        method.support.enqueue(torch.nn.functional.normalize(torch.randn(method.support.size, 8), dim=1))
    return method


@pytest.mark.parametrize("name", sorted(ORDERED))
def test_an_ordered_objective_sums_each_full_size_target_against_every_other_view(name: str) -> None:
    method, views = _method(name), _views()
    pair_loss, scale = ORDERED[name]
    targets = (1,) if name in {"moco", "pcl"} and not method.options.symmetric else (0, 1)
    with torch.no_grad():
        loss = method.training_step(_batch(views)).loss
        expected = mean_over_pairs(
            lambda t, c: pair_loss(method, views[t], views[c]), target_pairs(len(views), targets), scale
        )
        two_views = method.training_step(_batch(views[:2])).loss
        expected_two = mean_over_pairs(
            lambda t, c: pair_loss(method, views[t], views[c]), target_pairs(2, targets), scale
        )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two_views, expected_two, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(loss, two_views)  # the small crops take part


@pytest.mark.parametrize("name", sorted(SYMMETRIC))
def test_a_symmetric_objective_averages_its_two_view_loss_over_pairs_with_a_full_size_view(name: str) -> None:
    method, views = _method(name), _views()
    with torch.no_grad():
        loss = method.training_step(_batch(views)).loss
        expected = mean_over_pairs(
            lambda i, j: method.training_step(_batch([views[i], views[j]])).loss, view_pairs(len(views))
        )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(loss, method.training_step(_batch(views[:2])).loss.detach())


@pytest.mark.parametrize("name", sorted(SYMMETRIC | set(ORDERED)))
def test_small_crops_receive_gradients(name: str) -> None:
    method, views = _method(name), _views(1)
    small = views[2].clone().requires_grad_(True)
    method.training_step(_batch([*views[:2], small, *views[3:]])).loss.backward()
    assert small.grad is not None and small.grad.abs().sum() > 0


def _published(name: str, m: Method, v1: Tensor, v2: Tensor) -> Tensor:
    """Each ordered objective's published two-view loss, written out."""
    enc, tau = m.encoder, getattr(getattr(m, "options", None), "temperature", None)
    if name in {"byol", "directpred"}:  # Grill et al. (2020), Eq. 2, both directions summed
        return byol_loss(m.predictor(enc(v1)), m.target(v2)) + byol_loss(m.predictor(enc(v2)), m.target(v1))
    if name == "simsiam":  # Chen & He (2021), Eq. 2
        return negative_cosine(m.predictor(enc(v1)), enc(v2)) / 2 + negative_cosine(m.predictor(enc(v2)), enc(v1)) / 2
    if name in {"moco", "pcl"}:  # He et al. (2020), Alg. 1; symmetrised as in MoCo v2's code
        one = info_nce_queue_loss(enc(v1), m.key_encoder(v2), m.queue.rows(), tau)
        if not m.options.symmetric:
            return one
        return (one + info_nce_queue_loss(enc(v2), m.key_encoder(v1), m.queue.rows(), tau)) / 2
    if name == "mocov3":  # Chen, Xie & He (2021), Alg. 1
        q1, q2 = m.predictor(enc(v1)), m.predictor(enc(v2))
        return batch_keys_loss(q1, m.target(v2), tau) + batch_keys_loss(q2, m.target(v1), tau)
    # NNCLR, Dwibedi et al. (2021), Eq. 2, symmetrised
    p1, p2 = m.predictor(enc(v1)), m.predictor(enc(v2))
    return (nnclr_loss(m._neighbours(enc(v1)), p2, tau) + nnclr_loss(m._neighbours(enc(v2)), p1, tau)) / 2


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("name", sorted(ORDERED))
def test_with_two_views_an_ordered_objective_is_its_published_loss(name: str, symmetric: bool) -> None:
    method, views = _method(name), _views()
    if hasattr(getattr(method, "options", None), "symmetric"):
        method.options.symmetric = symmetric  # MoCo's one-way loss too
    elif not symmetric:
        pytest.skip("no one-way variant")
    with torch.no_grad():
        torch.testing.assert_close(method.training_step(_batch(views[:2])).loss,
                                   _published(name, method, *views[:2]), rtol=1e-5, atol=1e-6)  # fmt: skip
        if not symmetric:  # the small crops query the second view's keys alone
            pair_loss, _ = ORDERED[name]
            expected = mean_over_pairs(
                lambda t, c: pair_loss(method, views[t], views[c]), [(1, 0), (1, 2), (1, 3), (1, 4)]
            )
            torch.testing.assert_close(method.training_step(_batch(views)).loss, expected, rtol=1e-5, atol=1e-6)
