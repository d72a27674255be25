from __future__ import annotations

import pytest
import torch

from invprop.config import build_method, from_dict, preset
from invprop.methods import Batch
from invprop.models import build_encoder


def make(name: str, labels: torch.Tensor | None = None, **loss):
    cfg = from_dict(
        {"method": name, "model": {"embedding_dim": 16}, "loss": {"n_background": 32, "n_hard_positives": 5, **loss}},
        base=preset("digits"),
    )
    encoder = build_encoder("digits_convnet", "mlp", 16, in_channels=1)
    return build_method(cfg, encoder, 100, labels=labels)


@pytest.mark.parametrize(
    "name,positives,hard_negatives",
    [
        ("invp", "propagation", True),
        ("knn-positives", "knn", True),
        ("insdis-hard", "none", True),
        ("insdis", "none", False),
    ],
)
def test_each_method_wires_its_objective_and_trains_a_step(name: str, positives: str, hard_negatives: bool) -> None:
    method = make(name, labels=torch.arange(100) % 10)
    assert method.loss.positives == positives and method.loss.hard_negatives == hard_negatives
    indices = torch.arange(8)
    before = method.bank.features[indices].clone()
    out = method.training_step(Batch.of(indices, torch.rand(8, 1, 8, 8), epoch=50))
    out.loss.backward()
    method.after_step([out])
    assert torch.isfinite(out.loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())
    assert not torch.equal(method.bank.features[indices], before)  # the EMA update ran
    if positives == "none":
        assert set(out.terms) == {"loss_ins"}
    else:
        assert {"loss_inv", "positives", "purity_positive", "purity_hard_positive", "background_has_positive"} <= set(
            out.terms
        )
        assert 0 <= float(out.terms["purity_positive"]) <= 1


def test_knn_positives_default_to_p_and_follow_the_config() -> None:
    assert make("knn-positives").loss.knn_positives == 5
    assert make("knn-positives", knn_positives=3).loss.knn_positives == 3


def test_diagnostics_are_off_without_labels_and_never_change_the_loss() -> None:
    torch.manual_seed(0)
    a = make("invp")
    b = make("invp", labels=torch.arange(100) % 10)
    b.load_state_dict(a.state_dict())
    batch = Batch.of(torch.arange(8), torch.rand(8, 1, 8, 8), epoch=50)
    a.eval(), b.eval()
    out_a, out_b = a.training_step(batch), b.training_step(batch)
    assert torch.equal(out_a.loss, out_b.loss)
    assert "purity_positive" not in out_a.terms and "purity_positive" in out_b.terms


class _Flatten(torch.nn.Module):
    """A BatchNorm-free backbone, so that per-process batches give exactly the single-process gradients."""

    feature_dim = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _distributed_run(bank_mode: str, world: int, rank: int) -> dict[str, object]:
    """Three steps of InvP on a fixed global batch of 16 (rank r takes its slice), as in a DDP run."""
    from invprop.methods import Method  # noqa: F401 - the registry is filled by invprop.methods
    from invprop.models.encoder import Encoder
    from invprop.models.heads import HEADS

    cfg = from_dict(
        {"model": {"embedding_dim": 16}, "bank": {"num_neighbors": 3, "placement": bank_mode},
         "loss": {"n_background": 24, "n_hard_positives": 5, "temperature": 0.2}},
        base=preset("digits"),
    )  # fmt: skip
    torch.manual_seed(0)
    encoder = Encoder(_Flatten(), HEADS.get("linear")(64, 16, None))
    forward = torch.nn.parallel.DistributedDataParallel(encoder) if world > 1 else None
    method = build_method(cfg, encoder, 100, distributed=world > 1, forward=forward)
    optimizer = torch.optim.SGD(method.encoder.parameters(), lr=0.5, momentum=0.9)
    images = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    per_process = 16 // world
    losses = []
    for step in range(3):
        batch = torch.randperm(100, generator=torch.Generator().manual_seed(10 + step))[:16]
        mine = batch[rank * per_process : (rank + 1) * per_process]
        out = method.training_step(Batch.of(mine, images[mine], epoch=50))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.after_step([out])
        losses.append(float(out.loss.detach()))
    state = method.state_dict()  # a collective for a split bank: the whole bank on rank 0
    return {"losses": losses, "features": state["bank.features"], "neighbors": method.bank.neighbors.clone(),
            "weights": [p.detach().clone() for p in method.encoder.parameters()]}  # fmt: skip


def _replicated(rank: int, world: int) -> dict[str, object]:
    return _distributed_run("replicated", world, rank)


def _sharded(rank: int, world: int) -> dict[str, object]:
    return _distributed_run("sharded", world, rank)


@pytest.mark.parametrize("worker", [_replicated, _sharded], ids=["replicated", "sharded"])
def test_two_processes_equal_one_process_with_the_same_global_batch(worker, tmp_path) -> None:
    from gloo import run_gloo

    results = run_gloo(worker, 2, tmp_path)
    single = _distributed_run("replicated", 1, 0)
    for rank, result in enumerate(results):
        # Banks and neighbour tables of all processes equal each other and the single-process ones.
        assert torch.equal(result["neighbors"], single["neighbors"]), rank
        for got, want in zip(result["weights"], single["weights"]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if worker is _replicated or rank == 0:
            torch.testing.assert_close(result["features"], single["features"], rtol=1e-5, atol=1e-5)
    if worker is _replicated:  # each process's loss is its half of the batch: their mean is the global loss
        mean = [sum(values) / 2 for values in zip(*(r["losses"] for r in results))]
    else:  # a split bank gives every process the loss of the whole global batch
        mean = results[0]["losses"]
        assert results[1]["losses"] == mean
    for got, want in zip(mean, single["losses"]):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert single["losses"][0] != single["losses"][2]  # it trained


def _classifier(prior: bool = True, smoothing: float = 0.2):
    cfg = from_dict(
        {"method": "instance-classifier", "model": {"embedding_dim": 16},
         "classifier": {"prior": prior, "smoothing": smoothing, "hard_classes": 5}},
        base=preset("digits"),
    )  # fmt: skip
    torch.manual_seed(0)
    return build_method(cfg, build_encoder("digits_convnet", "mlp", 16, in_channels=1), 40)


def test_instance_classifier_trains_two_views_per_image() -> None:
    method = _classifier()
    assert method.views == 2 and method.classifier.num_classes == 40
    assert method.on_epoch_start(1) == {}
    assert method.classifier.hard.shape == (40, 5) and (method.classifier.hard >= 0).all()
    indices = torch.arange(8)
    out = method.training_step(Batch(indices, (torch.rand(16, 1, 8, 8),)))
    out.loss.backward()
    assert torch.isfinite(out.loss) and set(out.terms) == {"loss_cls"}
    assert method.classifier.weight.grad is not None and method.classifier.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())
    assert {id(p) for p in method.parameters()} >= {id(method.classifier.weight)}  # the optimiser sees the weights


def test_contrastive_prior_sets_weights_to_running_batchnorm_features() -> None:
    method = _classifier(prior=True)
    gaussian = method.classifier.weight.detach().clone()
    bn = next(m for m in method.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    running = bn.running_mean.clone()
    images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    batches = [(torch.arange(0, 20), images[:20]), (torch.arange(20, 40), images[20:])]
    method.encoder.eval()
    method.before_training(batches)
    assert not method.encoder.training  # restored
    assert not torch.equal(bn.running_mean, running)  # BatchNorm ran in training mode: statistics updated
    assert all(p.grad is None for p in method.parameters())  # no gradients
    # Each row is the unit feature of its image, computed with the statistics of its own batch (training mode).
    reference = _classifier(prior=True)
    reference.encoder.train()
    with torch.no_grad():
        expected = torch.cat([torch.nn.functional.normalize(reference.encoder(x), dim=1) for _, x in batches])
    torch.testing.assert_close(method.classifier.weight.detach(), expected)
    assert not torch.allclose(method.classifier.weight.detach(), gaussian)
    frozen = _classifier(prior=False)
    frozen.before_training(batches)
    assert torch.equal(frozen.classifier.weight.detach(), gaussian)  # switched off: the Gaussian init stays


def test_faiss_rebuild_records_its_recall() -> None:
    pytest.importorskip("faiss")
    method = make("invp")
    method.graph_update = "rebuild"
    bank = method.settings.bank
    bank.rebuild_search, bank.faiss_lists, bank.faiss_probe = "faiss", 2, 2
    metrics = method.on_epoch_end(1)
    assert set(metrics) == {"graph_recall"} and 0.0 < metrics["graph_recall"] <= 1.0
    bank.rebuild_search = "exact"
    assert method.on_epoch_end(2) == {} and method.bank.sampled_recall(torch.arange(100)) == 1.0


def test_a_plain_training_loop_needs_only_the_method_object() -> None:
    import invprop
    from invprop.core import MemoryBank
    from invprop.errors import ConfigError

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16))  # any module giving (B, D)
    method = invprop.create_method(
        "invp", encoder, num_samples=60, embedding_dim=16,
        bank={"num_neighbors": 3}, loss={"n_background": 30, "n_hard_positives": 5, "rampup_epochs": 0},
    )  # fmt: skip
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    images, indices = torch.randn(60, 1, 8, 8), torch.arange(8)
    expected = MemoryBank(
        60, 16, 0.5, 3, features=method.bank.features.clone(), neighbors=method.bank.neighbors.clone()
    )
    embeddings = encoder(images[indices]).detach()  # what the step sees, before the optimiser moves the weights
    out = method.training_step(invprop.Batch.of(indices, images[indices]))
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    method.after_step([out])
    # The authors' order, which the loop never had to know: refresh the neighbours from the bank, then EMA-update it.
    expected.refresh_neighbors(indices, embeddings)
    expected.update(indices, embeddings)
    assert torch.equal(method.bank.neighbors, expected.neighbors)
    torch.testing.assert_close(method.bank.features, expected.features)
    assert float(out.terms["loss_inv"]) > 0
    with pytest.raises(ConfigError, match="unknown setting loss.temprature"):
        invprop.create_method("invp", encoder, 60, 16, loss={"temprature": 0.2})
    classifier = invprop.create_method("instance-classifier", encoder, 60, 16, classifier={"hard_classes": 5})
    assert isinstance(classifier, invprop.InstanceClassification) and classifier.views == 2


def test_create_method_gives_the_field_s_methods_what_they_need() -> None:
    import invprop

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16))
    views = (torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8))
    for name, extra in (("byol", {"byol": {"predictor_hidden_dim": 8}}), ("moco", {"moco": {"queue_size": 8}})):
        method = invprop.create_method(name, encoder, 50, 16, total_steps=100, **extra)
        out = method.training_step(invprop.Batch.of(torch.arange(4), *views, step=50))
        out.loss.backward()
        method.after_step([out])
        assert torch.isfinite(out.loss)
    embeddings = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    pcl = invprop.create_method("pcl", encoder, 50, 16, total_steps=100, features=lambda module: embeddings,
                                pcl={"clusters": [3, 5], "warmup_epochs": 0, "queue_size": 8})  # fmt: skip
    assert set(pcl.on_epoch_start(1)) == {"kmeans_loss_3", "kmeans_loss_5"}
    out = pcl.training_step(invprop.Batch.of(torch.arange(4), *views, epoch=1))
    assert set(out.terms) == {"loss_nce", "loss_proto"}
    blind = invprop.create_method("pcl", encoder, 50, 16, total_steps=100, pcl={"clusters": [3], "warmup_epochs": 0})
    with pytest.raises(RuntimeError, match="BuildContext.features"):
        blind.on_epoch_start(1)


def test_two_steps_before_one_optimiser_step_update_the_bank_rows_of_both_in_order() -> None:
    from invprop.core import MemoryBank

    method = make("invp")
    expected = MemoryBank(
        100, 16, 0.5, 4, features=method.bank.features.clone(), neighbors=method.bank.neighbors.clone()
    )
    outputs = [method.training_step(Batch.of(torch.arange(8 * i, 8 * i + 8), torch.rand(8, 1, 8, 8), epoch=50))
               for i in range(2)]  # fmt: skip
    method.after_step(outputs)
    for out in outputs:  # the authors' order, output by output: neighbour refresh, then the EMA update
        update = out.update
        expected.refresh_neighbors(update.indices, update.embeddings, candidates=update.background)
        expected.update(update.indices, update.embeddings)
    assert torch.equal(method.bank.neighbors, expected.neighbors)
    torch.testing.assert_close(method.bank.features, expected.features)
