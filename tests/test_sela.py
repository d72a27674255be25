"""SeLa: labels from the heads' own predictions by an equipartitioned transport, which heads a label update
relabels, random equipartitions before the first, and the heads learning the labels. What every method must do
(short runs, exact resume, two processes equal one) is the contract test's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invprop.core.clustering import self_labels
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.clustering.sela import SeLa
from invprop.settings import merge

D, N = 4, 30


def _method(features=None, **options) -> SeLa:
    torch.manual_seed(0)
    spec = METHODS.get("sela")
    settings = spec.new_sections()
    merge(settings, {"sela": {"heads": 3, "clusters": 5, "lam": 10.0, **options}})
    method = spec.create(settings, nn.Sequential(nn.Flatten(), nn.Linear(16, D)), BuildContext(N, D, features=features))
    assert isinstance(method, SeLa)
    return method


def test_before_the_first_update_every_head_holds_a_random_equipartition() -> None:
    method = _method()
    assert method.labels.shape == (3, N)
    assert all(torch.bincount(row, minlength=5).tolist() == [6] * 5 for row in method.labels)
    assert not torch.equal(method.labels[0], method.labels[1])


@pytest.mark.parametrize(("relabel", "every", "expected"), [
    ("all", 1, {1: [0, 1, 2], 2: [0, 1, 2]}),
    ("one", 1, {1: [0], 2: [1], 3: [2], 4: [0]}),
    ("all", 4, {1: [0, 1, 2], 2: [], 4: [], 5: [0, 1, 2]}),
    ("one", 2, {1: [0], 2: [], 3: [1], 5: [2], 7: [0]}),
])  # fmt: skip
def test_a_label_update_relabels_all_heads_or_one_in_turn(relabel: str, every: int, expected: dict) -> None:
    method = _method(relabel=relabel, relabel_every=every)
    assert {epoch: method.relabelled_heads(epoch) for epoch in expected} == expected


def test_an_update_gives_each_relabelled_head_the_transport_of_its_own_predictions() -> None:
    embeddings = torch.randn(N, D, generator=torch.Generator().manual_seed(2))
    method = _method(features=lambda encoder: embeddings, relabel="one", relabel_every=1)
    untouched = method.labels[1:].clone()
    stats = method.on_epoch_start(1)  # head 0 only
    with torch.no_grad():
        log_probs = F.log_softmax(method.head_logits(embeddings), dim=2)
    assert torch.equal(method.labels[0], self_labels(log_probs[:, 0], 10.0).labels)
    assert torch.equal(method.labels[1:], untouched)
    largest = max(int(torch.bincount(row).max()) for row in method.labels)
    assert stats["largest_label"] == largest / N and stats["label_iterations"] >= 1
    assert set(method.on_epoch_start(2)) == {"largest_label", "label_iterations"}  # head 1
    quiet = _method(features=lambda encoder: embeddings, relabel_every=2)
    quiet.on_epoch_start(1)
    assert set(quiet.on_epoch_start(2)) == {"largest_label"}  # no update, the share still recorded


def test_the_loss_is_the_heads_mean_cross_entropy_against_their_labels() -> None:
    method = _method()
    images = torch.randn(4, 1, 4, 4)
    indices = torch.tensor([3, 0, 7, 11])
    out = method.training_step(Batch.of(indices, images))
    logits = method.head_logits(method.encoder(images))
    expected = sum(F.cross_entropy(logits[:, t], method.labels[t, indices]) for t in range(3)) / 3
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    out.loss.backward()
    assert method.heads.weight.grad is not None and method.heads in method.shared_modules()


def test_more_labels_than_images_is_refused() -> None:
    with pytest.raises(ConfigError, match="sela.clusters=40 is more than the 30 training images"):
        _method(clusters=40)
