"""DeepCluster: pseudo-labels from whitened k-means, a re-initialised classifier, sampling uniform over clusters,
and the same clusters in every process of a distributed run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from invprop.config import from_dict, preset
from invprop.core.clustering import initial_centroids, kmeans, pca_whitening
from invprop.data.loader import cluster_balanced_order
from invprop.engine import Trainer, load_checkpoint
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.clustering.deepcluster import DeepCluster
from invprop.settings import merge

D = 4


def _method(n: int = 40, features=None, **options) -> DeepCluster:
    torch.manual_seed(0)
    spec = METHODS.get("deepcluster")
    settings = spec.new_sections()
    merge(settings, {"deepcluster": {"clusters": 3, "pca_dim": D, **options}})
    context = BuildContext(n, D, features=features)
    method = spec.create(settings, nn.Sequential(nn.Flatten(), nn.Linear(16, D)), context)
    assert isinstance(method, DeepCluster)
    return method


def _blobs(n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])
    return centres[torch.arange(n) % 3] + 0.3 * torch.randn(n, D, generator=g)


def test_pseudo_labels_are_k_means_of_the_whitened_normalised_embeddings():
    embeddings = _blobs()
    method = _method(features=lambda encoder: embeddings)
    torch.manual_seed(7)
    stats = method.on_epoch_start(1)
    assert set(stats) == {"kmeans_loss", "kmeans_splits", "largest_cluster"}
    torch.manual_seed(7)
    generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    points = nn.functional.normalize(pca_whitening(embeddings, D)(embeddings), dim=1)
    expected = kmeans(points, initial_centroids(points, 3, generator), 20, generator).assignments
    assert torch.equal(method.pseudo_labels, expected)
    # The three blobs are the three clusters.
    groups = {frozenset(method.pseudo_labels[torch.arange(40) % 3 == c].tolist()) for c in range(3)}
    assert groups == {frozenset({0}), frozenset({1}), frozenset({2})}


def test_the_classifier_is_reinitialised_every_epoch_and_learns_the_pseudo_labels():
    method = _method(features=lambda encoder: _blobs())
    method.on_epoch_start(1)
    first = method.classifier.weight.detach().clone()
    assert method.reinitialised_parameters() == list(method.classifier.parameters())
    out = method.training_step(Batch.of(torch.arange(6), torch.randn(6, 1, 4, 4)))
    out.loss.backward()
    logits = method.classifier(method.encoder(torch.randn(1, 1, 4, 4)))
    assert logits.shape == (1, 3) and method.classifier.weight.grad is not None
    method.on_epoch_start(2)
    assert not torch.equal(method.classifier.weight, first)


def test_the_epoch_visits_clusters_uniformly():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2])
    order = cluster_balanced_order(labels, seed=3)
    assert order.shape == (100,)
    counts = torch.bincount(labels[order], minlength=3)
    assert (counts - 100 / 3).abs().max() <= 2  # each cluster about a third of the epoch
    assert torch.equal(order, cluster_balanced_order(labels, seed=3))
    method = _method(n=100)
    method.pseudo_labels.copy_(labels)
    assert not torch.equal(method.epoch_order(100, 3), cluster_balanced_order(labels, 3))  # not clustered yet
    method.clustered.fill_(True)
    assert torch.equal(method.epoch_order(100, 3), cluster_balanced_order(labels, 3))


def test_more_clusters_than_images_is_refused():
    with pytest.raises(ConfigError, match="deepcluster.clusters=50 is more than the 40 training images"):
        _method(clusters=50)


def _first_clusters(rank: int, world: int, run: str) -> torch.Tensor:
    """The pseudo-labels of epoch 1 (the engine seeds the global generator from the run's seed and the epoch)."""
    from invprop.engine.process_group import SINGLE_PROCESS, DistributedContext

    cfg = from_dict({"method": "deepcluster", "epochs": 1, "device": "cpu", "optim": {"batch_size": 64}},
                    base=preset("digits", "deepcluster"))  # fmt: skip
    context = DistributedContext(rank, world, rank) if world > 1 else SINGLE_PROCESS
    trainer = Trainer(cfg, Path(run), progress=False, context=context)
    torch.manual_seed(5)
    trainer.method.on_epoch_start(1)
    assert isinstance(trainer.method, DeepCluster)
    return trainer.method.pseudo_labels.clone()


@pytest.mark.slow
def test_every_process_holds_the_clusters_of_one_process(tmp_path: Path) -> None:
    from gloo import run_gloo

    single = _first_clusters(0, 1, str(tmp_path / "one"))
    assert len(torch.unique(single)) == 30
    for labels in run_gloo(_first_clusters, 2, tmp_path, str(tmp_path / "two")):
        assert torch.equal(labels, single)


@pytest.mark.slow
def test_resume_keeps_the_pseudo_labels(tmp_path: Path) -> None:
    cfg = from_dict({"method": "deepcluster", "epochs": 2, "optim": {"batch_size": 64}},
                    base=preset("digits", "deepcluster"))  # fmt: skip
    Trainer(cfg, tmp_path / "run", progress=False).fit(stop_after=1)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["model"]["pseudo_labels"]
    assert saved.shape == (1347,) and len(torch.unique(saved)) == 30


def test_faiss_kmeans_finds_the_same_blobs():
    pytest.importorskip("faiss")
    method = _method(kmeans="faiss", features=lambda encoder: _blobs())
    method.on_epoch_start(1)
    groups = {frozenset(method.pseudo_labels[torch.arange(40) % 3 == c].tolist()) for c in range(3)}
    assert groups == {frozenset({0}), frozenset({1}), frozenset({2})}


def test_a_large_cluster_gives_distinct_images():
    labels = torch.tensor([0] * 70 + [1] * 30)  # 51 draws each: cluster 0 without replacement, cluster 1 with
    order = cluster_balanced_order(labels, seed=1)
    large = order[labels[order] == 0].tolist()
    assert len(large) == len(set(large)) and len(large) >= 45
