from __future__ import annotations

import math

import torch

from invprop.core.knn_classifier import knn_class_scores, topk_accuracy


def brute_force(train, labels, query, classes, k, sigma):
    train = torch.nn.functional.normalize(train.double(), dim=1)
    query = torch.nn.functional.normalize(query.double(), dim=1)
    out = torch.zeros(query.shape[0], classes, dtype=torch.double)
    for q in range(query.shape[0]):
        sims = [(float(train[j] @ query[q]), j) for j in range(train.shape[0])]
        for sim, j in sorted(sims, reverse=True)[:k]:
            out[q, labels[j]] += math.exp(sim / sigma)
    return out


def test_scores_match_brute_force_up_to_scale() -> None:
    train, labels, query = torch.randn(60, 5), torch.randint(0, 4, (60,)), torch.randn(13, 5)
    got = knn_class_scores(train, labels, query, 4, k=7, sigma=0.1, chunk_size=4)
    ref = brute_force(train, labels, query, 4, 7, 0.1)
    ref = ref * math.exp(-1 / 0.1)  # the implementation shifts logits by the maximum similarity 1
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-12)
    assert torch.equal(got.argmax(1), ref.argmax(1))


def test_k_is_capped_and_accuracy() -> None:
    train = torch.eye(3)
    scores = knn_class_scores(train, torch.tensor([0, 1, 2]), torch.eye(3), 3, k=200)
    acc = topk_accuracy(scores, torch.tensor([0, 1, 2]), (1, 5))
    assert acc == {1: 1.0, 5: 1.0}
    wrong = topk_accuracy(scores, torch.tensor([1, 2, 0]), (1, 2))
    assert wrong[1] == 0.0 and 0.0 < wrong[2] <= 1.0
