from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gloo import run_gloo
from invprop.core.cosine_classifier import (
    UNKNOWN_CLASS,
    CosineInstanceClassifier,
    cosine_logits,
    smoothed_cross_entropy,
    smoothed_targets,
)
from invprop.core.graph import knn_graph
from invprop.distributed.partition import RowPartition


def test_smoothed_targets_put_alpha_over_k_on_exactly_the_hard_classes() -> None:
    classes = torch.tensor([3, 7, 1])
    hard = torch.tensor([[5, 0, 9, 2], [1, 2, 3, 4], [UNKNOWN_CLASS] * 4])
    columns, weights = smoothed_targets(classes, hard, alpha=0.2)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert columns[:, 0].tolist() == [3, 7, 1]
    torch.testing.assert_close(weights[0], torch.tensor([0.8, 0.05, 0.05, 0.05, 0.05]))
    assert columns[0, 1:].tolist() == [5, 0, 9, 2]
    dense = torch.zeros(2, 10).scatter_add_(1, columns[:2], weights[:2])
    assert (dense[0] > 0).sum() == 5 and dense[0, 3] == pytest.approx(0.8)
    assert weights[2].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]  # hard classes not mined yet: one-hot
    _, one_hot = smoothed_targets(classes, hard, alpha=0.0)
    assert one_hot[:, 1:].abs().sum() == 0 and (one_hot[:, 0] == 1).all()
    with pytest.raises(ValueError, match="alpha"):
        smoothed_targets(classes, hard, alpha=1.0)


def test_smoothed_cross_entropy_is_cross_entropy_with_the_dense_target() -> None:
    logits = torch.randn(4, 12) * 3
    columns = torch.tensor([[0, 5, 6], [1, 2, 3], [2, 0, 1], [3, 11, 10]])
    weights = torch.tensor([[0.8, 0.1, 0.1]] * 4)
    dense = torch.zeros(4, 12).scatter_add_(1, columns, weights)
    expected = F.cross_entropy(logits, dense, reduction="none")
    got = smoothed_cross_entropy(logits.gather(1, columns), weights, torch.logsumexp(logits, dim=1))
    torch.testing.assert_close(got, expected)


def test_classifier_loss_is_the_cosine_softmax_cross_entropy() -> None:
    clf = CosineInstanceClassifier(30, 8, temperature=0.1, smoothing=0.2, hard_classes=4)
    z = torch.randn(5, 8)
    classes = torch.tensor([0, 4, 9, 20, 29])
    # Before mining, Eq. 1: plain cross-entropy over all 30 classes.
    torch.testing.assert_close(
        clf(z, classes), F.cross_entropy(cosine_logits(z, clf.weight, 0.1), classes, reduction="none")
    )
    clf.mine_hard_classes(chunk_size=7)
    unit = F.normalize(clf.weight.detach(), dim=1)
    assert torch.equal(clf.hard, knn_graph(unit, 4))  # the 4 most similar other rows, most similar first
    target = torch.zeros(5, 30).scatter_(1, classes[:, None], 0.8)
    target.scatter_add_(1, clf.hard[classes], torch.full((5, 4), 0.05))
    expected = F.cross_entropy(cosine_logits(z, clf.weight, 0.1), target, reduction="none")
    torch.testing.assert_close(clf(z, classes), expected)


def test_without_smoothing_no_hard_classes_are_kept() -> None:
    clf = CosineInstanceClassifier(10, 4, smoothing=0.0, hard_classes=100)
    clf.mine_hard_classes()
    assert clf.hard.shape == (10, 0)
    with pytest.raises(ValueError, match="hard_classes"):
        CosineInstanceClassifier(10, 4, smoothing=0.2, hard_classes=10)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(41, 6, generator=g), torch.randn(8, 6, generator=g), torch.randperm(41, generator=g)[:8]


def _whole_classifier(weights: torch.Tensor) -> CosineInstanceClassifier:
    """A classifier of every row (no partition) with the given weights, its hard classes mined."""
    clf = CosineInstanceClassifier(41, 6, temperature=0.2, smoothing=0.2, hard_classes=5)
    with torch.no_grad():
        clf.weight.copy_(weights)
    clf.mine_hard_classes()
    return clf


def _sharded(rank: int, world: int) -> dict[str, torch.Tensor]:
    weights, embeddings, classes = _inputs()
    clf = CosineInstanceClassifier(
        41, 6, temperature=0.2, smoothing=0.2, hard_classes=5, partition=RowPartition.split(41)
    )
    with torch.no_grad():
        clf.weight.copy_(weights[clf.partition.start : clf.partition.stop])
    clf.mine_hard_classes(chunk_size=6)
    z = embeddings[4 * rank : 4 * rank + 4].clone().requires_grad_(True)
    losses = clf(z, classes[4 * rank : 4 * rank + 4])
    (losses.mean() / world).backward()  # the processes' losses sum to the single-process one
    state = clf.state_dict()
    return {"losses": losses.detach(), "z_grad": z.grad, "w_grad": clf.weight.grad, "hard": clf.hard.clone(),
            "state_weight": state["weight"], "bounds": torch.tensor([clf.partition.start, clf.partition.stop])}  # fmt: skip


def test_sharded_classifier_loss_and_gradients_equal_one_process(tmp_path: Path) -> None:
    results = run_gloo(_sharded, 2, tmp_path)
    weights, embeddings, classes = _inputs()
    clf = _whole_classifier(weights)
    z = embeddings.clone().requires_grad_(True)
    losses = clf(z, classes)
    losses.mean().backward()
    assert torch.equal(torch.cat([r["hard"] for r in results]), clf.hard)
    for rank, result in enumerate(results):
        start, stop = result["bounds"].tolist()
        torch.testing.assert_close(result["losses"], losses.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result["z_grad"], z.grad[4 * rank : 4 * rank + 4], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["w_grad"], clf.weight.grad[start:stop], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0]["state_weight"], weights)  # the checkpoint holds the whole matrix


def _whole_inside_a_group(rank: int, world: int) -> dict[str, torch.Tensor]:
    """A user's own DDP job: every process holds a whole classifier and classifies its own, different batch."""
    weights, embeddings, classes = _inputs()
    clf = _whole_classifier(weights)  # whole: no partition given
    return {"losses": clf(embeddings[4 * rank : 4 * rank + 4], classes[4 * rank : 4 * rank + 4]).detach()}


def test_a_whole_classifier_in_a_process_group_stays_local(tmp_path: Path) -> None:
    results = run_gloo(_whole_inside_a_group, 2, tmp_path)
    weights, embeddings, classes = _inputs()
    clf = _whole_classifier(weights)
    for rank, result in enumerate(results):  # no denominator mixes the two processes' samples
        expected = clf(embeddings[4 * rank : 4 * rank + 4], classes[4 * rank : 4 * rank + 4]).detach()
        torch.testing.assert_close(result["losses"], expected, rtol=1e-6, atol=1e-6)


def test_split_classifier_draws_the_same_gaussian_rows_as_a_whole_one() -> None:
    whole = CosineInstanceClassifier(20, 4, generator=torch.Generator().manual_seed(1), hard_classes=3)
    part = RowPartition(20, 7, 13)  # rows 7..12 of a (hypothetical) split
    piece = CosineInstanceClassifier(20, 4, generator=torch.Generator().manual_seed(1), hard_classes=3, partition=part)
    assert torch.equal(piece.weight, whole.weight[7:13])
    piece.set_rows(torch.tensor([0, 8, 12, 19]), torch.ones(4, 4))
    assert piece.weight[1].tolist() == [1.0] * 4 and piece.weight[5].tolist() == [1.0] * 4
    assert torch.equal(piece.weight[0], whole.weight[7])
