"""The field's methods on the engine: which parameters learn, momentum updates and queue order, schedules, exact
resume, and a two-process run equal to one process with the same global batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gloo import run_gloo
from invprop.config import from_dict, preset
from invprop.engine import Trainer, load_checkpoint
from invprop.methods import METHODS, BuildContext, Method
from invprop.methods.byol import BYOL
from invprop.methods.moco import MoCo
from invprop.settings import merge

FIELD = ("simclr", "moco", "byol", "simsiam", "barlowtwins", "vicreg", "nnclr")
#: Methods of the clustering and pretext families that a two-process run can match exactly (jigsaw draws its
#: puzzles from each process's own generator; deepcluster's whole-dataset clusters are tested in test_deepcluster.py,
#: and pcl gets its embeddings the same way).
EXACT_IN_TWO = ("swav", "rotnet")
D = 8


def _encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, D))


def _method(name: str, encoder: nn.Module, distributed: bool = False, **options: Any) -> Method:
    """``name`` with small queues and predictors, ``options`` over its own section."""
    spec = METHODS.get(name)
    settings = spec.settings()
    small = {"moco": {"queue_size": 6}, "nnclr": {"queue_size": 6, "predictor_hidden_dim": 12},
             "byol": {"predictor_hidden_dim": 12}, "simsiam": {"predictor_hidden_dim": 4},
             "swav": {"prototypes": 10, "queue_size": 8, "queue_start_epoch": 1, "freeze_prototypes_epochs": 0}}  # fmt: skip
    (own,) = spec.sections()
    merge(settings, {own: {**small.get(own, {}), **options}})
    return spec.build(settings, encoder, BuildContext(100, D, distributed))


def _views(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(2 * batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", FIELD)
def test_only_the_online_parts_learn(name: str) -> None:
    method = _method(name, _encoder())
    method.set_total_steps(10)
    out = method.training_step(torch.arange(4), _views(4), epoch=1)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for p in method.encoder.parameters())
    frozen = [m for attr in ("key_encoder", "target") if (m := getattr(method, attr, None)) is not None]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
    predictor = getattr(method, "predictor", None)
    if predictor is not None:
        assert all(p.grad is not None for p in predictor.parameters())


def test_moco_key_encoder_follows_and_the_queue_takes_the_normalised_keys_in_order() -> None:
    method = _method("moco", _encoder(), base_momentum=0.9, final_momentum=0.9, symmetric=True, queue_size=20)
    assert isinstance(method, MoCo)
    method.set_total_steps(10)
    images = _views(3)
    with torch.no_grad():
        k1, k2 = method.halves(method.key_encoder(images))
    key_before = [p.clone() for p in method.key_encoder.parameters()]
    out = method.training_step(torch.arange(3), images, epoch=1)
    out.loss.backward()
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.sub_(0.5 * p.grad)  # the optimiser step
    method.after_step()
    for key, old, query in zip(method.key_encoder.parameters(), key_before, method.encoder.parameters(), strict=True):
        assert torch.allclose(key, 0.9 * old + 0.1 * query)
    expected = nn.functional.normalize(torch.cat([k2, k1]), dim=1)  # the second views' keys first
    assert torch.allclose(method.queue.rows(), expected, atol=1e-6)
    assert int(method.step) == 1


def test_byol_target_momentum_rises_on_the_cosine_schedule() -> None:
    method = _method("byol", _encoder(), base_momentum=0.99)
    assert isinstance(method, BYOL)
    method.set_total_steps(4)
    seen = []
    for _ in range(5):
        seen.append(method.momentum())
        method.after_step()
    assert seen[0] == pytest.approx(0.99) and seen[2] == pytest.approx(0.995) and seen[4] == pytest.approx(1.0)
    assert seen == sorted(seen)


def test_simsiam_logs_its_collapse_indicator() -> None:
    out = _method("simsiam", _encoder()).training_step(torch.arange(4), _views(4), epoch=1)
    assert 0 < float(out.terms["output_std"]) <= 1


@pytest.mark.parametrize("name", [*FIELD, "pirl", "rotnet", "jigsaw", "swav", "deepcluster", "pcl"])
def test_stop_and_resume_ends_exactly_where_an_uninterrupted_run_does(name: str, tmp_path: Path) -> None:
    state = {"pcl": {"pcl": {"warmup_epochs": 1}}, "swav": {"swav": {"queue_size": 128, "queue_start_epoch": 1}}}
    values = {"method": name, "epochs": 2, "optim": {"batch_size": 64}, **state.get(name, {})}  # state to resume
    cfg = from_dict(values, base=preset("digits", name))
    full = Trainer(cfg, tmp_path / "full", progress=False).fit().metrics
    Trainer(cfg, tmp_path / "cut", progress=False).fit(stop_after=1)
    resumed = Trainer(cfg, tmp_path / "cut", progress=False).fit(resume=True).metrics
    for key in ("knn_top1", "knn_top5", "loss", "epochs"):
        assert resumed[key] == full[key], key
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_steps(rank: int, world: int, name: str, steps: int, global_batch: int) -> dict[str, torch.Tensor]:
    """``steps`` SGD steps of ``name`` on a fixed global batch; this process takes its block of rows of each view."""
    distributed = world > 1
    method = _method(name, _encoder(), distributed=distributed)
    if hasattr(method, "predictor"):  # without its BatchNorm, whose statistics are per process by design
        torch.manual_seed(1)
        method.predictor = nn.Sequential(nn.Linear(D, 12), nn.ReLU(), nn.Linear(12, D))
    method.set_total_steps(steps)
    if distributed:
        method.set_encoder_wrapper(nn.parallel.DistributedDataParallel(method.encoder))
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    b = global_batch // world
    for step in range(steps):
        first, second = TwoViews.split(_views(global_batch, seed=step))
        rows = slice(rank * b, (rank + 1) * b)
        images = torch.cat([first[rows], second[rows]])
        out = method.training_step(torch.arange(b), images, epoch=1)
        optimizer.zero_grad()
        out.loss.backward()
        method.before_optimizer_step()
        optimizer.step()
        method.after_step()
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


class TwoViews:
    @staticmethod
    def split(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = images.shape[0] // 2
        return images[:n], images[n:]


@pytest.mark.slow
@pytest.mark.parametrize("name", [*FIELD, *EXACT_IN_TWO])
def test_two_processes_equal_one_with_the_same_global_batch(name: str, tmp_path: Path) -> None:
    """Gathered projections, gathered keys before enqueueing, averaged predictor gradients: 2 gloo processes end
    with the parameters, queues and target networks of one process (encoder and predictor without BatchNorm, whose
    statistics are per process unless distributed.sync_bn). SwAV's queues are per process: together, in rank order,
    they hold the single process's rows."""
    single = _train_steps(0, 1, name, 3, 8)
    results = run_gloo(_train_steps, 2, tmp_path, name, 3, 8)
    for state in results:
        assert state.keys() == single.keys()
        for key, value in single.items():
            if key.startswith("queues."):
                if key.endswith(".queue"):
                    together = torch.cat([r[key] for r in results])
                    assert torch.allclose(together, value, atol=2e-5), key
                continue
            assert torch.allclose(state[key].float(), value.float(), atol=2e-5), key


def test_pirl_updates_its_bank_keeps_its_normaliser_and_refuses_torchrun() -> None:
    from invprop.errors import ConfigError
    from invprop.models import build_encoder

    spec = METHODS.get("pirl")
    settings = spec.settings()
    merge(settings, {"pirl": {"negatives": 16, "normaliser": "first_step"}})
    encoder = build_encoder("digits_convnet", "linear", D, in_channels=1)
    method = spec.build(settings, encoder, BuildContext(20, D))
    indices = torch.arange(4)
    before = method.bank.features[indices].clone()
    others = method.bank.features[4:].clone()
    out = method.training_step(indices, _views(4), epoch=1)
    out.loss.backward()
    assert set(out.terms) == {"loss_jigsaw", "loss_image"} and torch.isfinite(out.loss)
    assert all(p.grad is not None for p in (*method.tile_projection.parameters(), *method.jigsaw_head.parameters()))
    normaliser = float(method.log_normaliser)
    method.after_step()
    assert not torch.allclose(method.bank.features[indices], before)  # EMA towards f(v_I)
    assert torch.equal(method.bank.features[4:], others)  # only the batch's rows
    method.training_step(indices, _views(4, seed=5), epoch=1)
    assert float(method.log_normaliser) == normaliser  # estimated once
    method.options.normaliser = "per_step"
    method.training_step(indices, _views(4, seed=6), epoch=1)
    assert float(method.log_normaliser) != normaliser  # estimated again at every step
    with pytest.raises(ConfigError, match="pirl does not run under torchrun"):
        spec.build(settings, build_encoder("digits_convnet", "linear", D, in_channels=1), BuildContext(20, D, True))
