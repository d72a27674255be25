"""PCL: InfoNCE alone during the warm-up, then prototypes from the momentum encoder's k-means at every granularity,
and the prototype term written out per sample."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.clustering.pcl import PCL
from invprop.settings import merge

D = 4


def _pcl(n: int = 30, features=None, **options) -> PCL:
    torch.manual_seed(0)
    spec = METHODS.get("pcl")
    settings = spec.new_sections()
    merge(settings, {"pcl": {"queue_size": 8, "clusters": [3, 5], "warmup_epochs": 1, **options}})
    context = BuildContext(n, D, features=features)
    method = spec.create(settings, nn.Sequential(nn.Flatten(), nn.Linear(16, D)), context)
    assert isinstance(method, PCL)
    return method


def test_warmup_is_infonce_alone_and_clustering_uses_the_momentum_encoder():
    seen: list[nn.Module] = []

    def source(encoder: nn.Module) -> torch.Tensor:
        seen.append(encoder)
        return torch.randn(30, D, generator=torch.Generator().manual_seed(2))

    method = _pcl(features=source)
    assert method.on_epoch_start(1) == {}
    assert not seen and not bool(method.ready)  # warm-up: no clustering
    out = method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 4, 4),), epoch=1))
    assert set(out.terms) == {"loss_nce"}
    stats = method.on_epoch_start(2)
    assert seen == [method.key_encoder] and bool(method.ready)
    assert set(stats) == {"kmeans_loss_3", "kmeans_loss_5"}
    out = method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 4, 4),), epoch=2))
    assert set(out.terms) == {"loss_nce", "loss_proto"}
    assert torch.allclose(out.loss, out.terms["loss_nce"] + out.terms["loss_proto"])
    for m, k in enumerate((3, 5)):
        assignments, prototypes, concentration = method.clustering(m)
        assert set(assignments.tolist()) == set(range(k))
        assert torch.allclose(prototypes.norm(dim=1), torch.ones(k))
        assert math.isclose(float(concentration.mean()), 0.2, rel_tol=1e-5)


def test_prototype_term_matches_the_formula_per_sample():
    method = _pcl(
        negative_prototypes=100, features=lambda encoder: torch.randn(30, D, generator=torch.Generator().manual_seed(3))
    )
    method.on_epoch_start(2)
    query = torch.randn(3, D)
    indices = torch.tensor([0, 7, 12])
    got = method.prototype_loss(query, indices)
    q = nn.functional.normalize(query, dim=1)
    total = 0.0
    for m in range(2):
        assignments, prototypes, phi = method.clustering(m)
        positives = [int(assignments[i]) for i in indices]
        others = [c for c in range(prototypes.shape[0]) if c not in positives]
        columns = positives + others  # the batch's positives first, then every other prototype
        for b in range(3):
            logits = [float(q[b] @ prototypes[c]) / float(phi[c]) for c in columns]
            total += -(logits[b] - math.log(sum(math.exp(x) for x in logits))) / 3
    assert math.isclose(float(got), total / 2, rel_tol=1e-5)


def test_negative_prototypes_are_drawn_when_there_are_more():
    method = _pcl(
        clusters=[10],
        negative_prototypes=2,
        features=lambda encoder: torch.randn(30, D, generator=torch.Generator().manual_seed(4)),
    )
    method.on_epoch_start(2)
    assert torch.isfinite(method.prototype_loss(torch.randn(2, D), torch.tensor([0, 1])))


def test_cluster_counts_are_checked():
    with pytest.raises(ConfigError, match="pcl.clusters must be a list of cluster counts between 2 and the 30"):
        _pcl(clusters=[3, 31])
