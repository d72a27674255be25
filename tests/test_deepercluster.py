"""DeeperCluster: two-level k-means, the hierarchical loss against its formula, and the method's labels."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.clustering_losses import hierarchical_cluster_loss
from invprop.core.hierarchical_clustering import two_level_kmeans
from invprop.errors import ConfigError
from invprop.methods.clustering.deepercluster import DeeperCluster, DeeperClusterSettings, rotate_each
from invprop.methods.method import Batch, BuildContext


def test_two_level_kmeans_finds_groups_inside_groups() -> None:
    # Two far-apart groups, each of two tight pairs (placed so that k-means cannot stall between them): the
    # super-clusters are the groups, the sub-clusters the pairs.
    pair = torch.tensor([[0.0, 0.0], [0.0, 0.1], [1.0, 5.0], [1.0, 5.1]])
    points = torch.cat([pair, pair + torch.tensor([40.0, 0.0])])
    result = two_level_kmeans(points, 2, 2, 20, torch.Generator().manual_seed(3))
    groups = result.super_labels.tolist()
    assert groups[:4] == [groups[0]] * 4 and groups[4:] == [groups[4]] * 4 and groups[0] != groups[4]
    pairs = result.flat_labels(2).tolist()
    assert len(set(pairs)) == 4 and all(pairs[i] == pairs[i + 1] for i in range(0, 8, 2))
    assert float(result.distances.max()) == pytest.approx(0.0025, rel=1e-2)  # (0.05)^2, in float32 of far points


def test_a_super_cluster_smaller_than_its_share_takes_one_cluster_per_point() -> None:
    points = torch.tensor([[0.0], [0.1], [0.2], [50.0]])
    result = two_level_kmeans(points, 2, 3, 10, torch.Generator().manual_seed(1))
    alone = result.super_labels[3]
    assert int((result.super_labels == alone).sum()) == 1 and int(result.sub_labels[3]) == 0
    assert sorted(result.sub_labels[:3].tolist()) == [0, 1, 2]


def test_hierarchical_loss_matches_the_per_sample_formula() -> None:
    torch.manual_seed(0)
    super_logits, sub_logits = torch.randn(3, 8), torch.randn(3, 5)
    y, z = torch.tensor([7, 0, 3]), torch.tensor([4, 4, 1])

    def ce(logits: torch.Tensor, label: int) -> float:
        return -(float(logits[label]) - math.log(sum(math.exp(float(v)) for v in logits)))

    expected = sum(ce(super_logits[i], int(y[i])) + ce(sub_logits[i], int(z[i])) for i in range(3)) / 3
    assert float(hierarchical_cluster_loss(super_logits, sub_logits, y, z)) == pytest.approx(expected, rel=1e-6)


def test_rotate_each_turns_each_image_by_its_own_count() -> None:
    images = torch.arange(8.0).view(2, 1, 2, 2)
    turned = rotate_each(images, torch.tensor([1, 3]))
    torch.testing.assert_close(turned[0], torch.rot90(images[0], 1, dims=(-2, -1)))
    torch.testing.assert_close(turned[1], torch.rot90(images[1], 3, dims=(-2, -1)))


def _method(seed: int = 0, **settings: object) -> DeeperCluster:
    values = {"super_clusters": 2, "clusters": 4, **settings}
    context = BuildContext(num_samples=6, embedding_dim=3, seed=seed)
    return DeeperCluster(DeeperClusterSettings(**values), torch.nn.Linear(4, 3), context)  # type: ignore[arg-type]


def test_super_classes_pair_clusters_with_rotations_and_each_has_a_sub_head() -> None:
    method = _method()
    assert method.super_classifier.out_features == 8 and len(method.sub_classifiers) == 8
    assert all(head.out_features == 2 for head in method.sub_classifiers)
    assert _method(rotation=False).super_classifier.out_features == 2


def test_rotations_depend_on_the_image_and_the_step_only() -> None:
    method = _method()
    batch = Batch.of(torch.tensor([5, 1, 3]), torch.zeros(3, 1, 2, 2), step=7)
    again = Batch.of(torch.tensor([3, 5]), torch.zeros(2, 1, 2, 2), step=7)
    turns, other = method.rotations(batch), method.rotations(again)
    assert turns[0] == other[1] and turns[2] == other[0]
    assert all(0 <= t < 4 for t in turns.tolist())
    steps = torch.stack(
        [method.rotations(Batch.of(torch.arange(6), torch.zeros(6, 1, 2, 2), step=s)) for s in range(8)]
    )
    assert len({tuple(row) for row in steps.tolist()}) > 1
    other_seed = _method(seed=1)
    assert not all(torch.equal(method.rotations(b), other_seed.rotations(b)) for b in (batch, again))


def test_each_sample_is_scored_by_its_own_super_class_head() -> None:
    method = _method()
    torch.manual_seed(0)
    embeddings, labels = torch.randn(5, 3), torch.tensor([7, 0, 7, 3, 0])
    logits = method.own_head_logits(embeddings, labels)
    for row, label in enumerate(labels.tolist()):
        torch.testing.assert_close(logits[row], method.sub_classifiers[label](embeddings[row]))


def test_clustering_fills_the_label_buffers_and_the_statistics() -> None:
    method = _method()
    far = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [5.0, 5.0, 0.0], [5.1, 5.0, 0.0], [0.0, 9.0, 9.0],
                        [0.1, 9.0, 9.0]])  # fmt: skip
    stats = method.cluster(far, torch.Generator().manual_seed(0))
    assert bool(method.clustered) and set(stats) == {"kmeans_loss", "kmeans_splits", "largest_cluster"}
    assert method.super_labels.max() < 2 and method.sub_labels.max() < 2
    assert set(method.super_labels.tolist()) == {0, 1}  # both super-clusters hold images
    assert len(set((method.super_labels * 2 + method.sub_labels).tolist())) >= 3
    assert method.statistics.tolist() == [stats[key] for key in ("kmeans_loss", "kmeans_splits", "largest_cluster")]


def test_clusters_must_split_evenly_and_fit_the_images() -> None:
    with pytest.raises(ConfigError, match="not a multiple"):
        _method(clusters=5)
    with pytest.raises(ConfigError, match="more than the 6 training images"):
        _method(clusters=8)
