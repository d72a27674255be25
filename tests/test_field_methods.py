"""The two-view methods of the field on their own: which parameters learn, momentum updates and queue order,
schedules, and PIRL's bank and normaliser. What every method must do (short runs, exact resume, two processes
equal one) is the contract test's (test_method_contract.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from invprop.methods import METHODS, Batch, BuildContext, Method
from invprop.methods.contrastive.moco import MoCo
from invprop.methods.distillation.byol import BYOL
from invprop.methods.two_views import halves
from invprop.settings import merge

FIELD = ("simclr", "moco", "byol", "simsiam", "barlowtwins", "vicreg", "nnclr")
D = 8


def _encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, D))


def _method(name: str, encoder: nn.Module, total_steps: int = 10, **options: Any) -> Method:
    """``name`` with small queues and predictors, ``options`` over its own section."""
    spec = METHODS.get(name)
    settings = spec.new_sections()
    small = {"moco": {"queue_size": 6}, "nnclr": {"queue_size": 6, "predictor_hidden_dim": 12},
             "byol": {"predictor_hidden_dim": 12}, "simsiam": {"predictor_hidden_dim": 4}}  # fmt: skip
    (own,) = spec.sections()
    merge(settings, {own: {**small.get(own, {}), **options}})
    return spec.create(settings, encoder, BuildContext(100, D, total_steps=total_steps))


def _views(batch: int, seed: int = 1) -> Batch:
    images = torch.randn(2 * batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return Batch(torch.arange(batch), (images,))


@pytest.mark.parametrize("name", FIELD)
def test_only_the_online_parts_learn(name: str) -> None:
    method = _method(name, _encoder())
    out = method.training_step(_views(4))
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
    batch = _views(3)
    with torch.no_grad():
        k1, k2 = halves(method.key_encoder(batch.images))
    key_before = [p.clone() for p in method.key_encoder.parameters()]
    out = method.training_step(batch)
    out.loss.backward()
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.sub_(0.5 * p.grad)  # the optimiser step
    method.after_step([out])
    for key, old, query in zip(method.key_encoder.parameters(), key_before, method.encoder.parameters(), strict=True):
        assert torch.allclose(key, 0.9 * old + 0.1 * query)
    expected = nn.functional.normalize(torch.cat([k2, k1]), dim=1)  # the second views' keys first
    assert torch.allclose(method.queue.rows(), expected, atol=1e-6)


def test_byol_target_momentum_rises_on_the_cosine_schedule_of_the_batches_steps() -> None:
    method = _method("byol", _encoder(), total_steps=4, base_momentum=0.99)
    assert isinstance(method, BYOL)
    seen = []
    for step in range(5):
        batch = _views(4)
        out = method.training_step(Batch(batch.indices, batch.groups, step=step))
        seen.append(out.terms["momentum"])
        target_before = [p.clone() for p in method.target.parameters()]
        method.after_step([out])
        m = seen[-1]
        for t, old, online in zip(method.target.parameters(), target_before, method.encoder.parameters(), strict=True):
            assert torch.allclose(t, m * old + (1 - m) * online)  # the step's own momentum
    assert seen[0] == pytest.approx(0.99) and seen[2] == pytest.approx(0.995) and seen[4] == pytest.approx(1.0)
    assert seen == sorted(seen)


def test_a_momentum_that_rises_needs_the_run_s_steps() -> None:
    from invprop.errors import ConfigError

    spec = METHODS.get("byol")
    with pytest.raises(ConfigError, match="byol.base_momentum rises from 0.99 to 1.0 over the run's steps"):
        spec.create(spec.new_sections(), _encoder(), BuildContext(100, D))
    fixed = METHODS.get("moco")
    settings = fixed.new_sections()
    merge(settings, {"moco": {"base_momentum": 0.99, "final_momentum": 0.99}})
    assert fixed.create(settings, _encoder(), BuildContext(100, D)) is not None  # a fixed momentum needs none


def test_simsiam_logs_its_collapse_indicator() -> None:
    out = _method("simsiam", _encoder()).training_step(_views(4))
    assert 0 < float(out.terms["output_std"]) <= 1


def test_pirl_updates_its_bank_keeps_its_normaliser_and_refuses_torchrun() -> None:
    from invprop.errors import ConfigError
    from invprop.models import build_encoder

    spec = METHODS.get("pirl")
    settings = spec.new_sections()
    merge(settings, {"pirl": {"negatives": 16, "normaliser": "first_step"}})
    encoder = build_encoder("digits_convnet", "linear", D, in_channels=1)
    method = spec.create(settings, encoder, BuildContext(20, D))
    indices = torch.arange(4)
    before = method.bank.features[indices].clone()
    others = method.bank.features[4:].clone()
    out = method.training_step(_views(4))
    out.loss.backward()
    assert set(out.terms) == {"loss_jigsaw", "loss_image"} and torch.isfinite(out.loss)
    assert all(p.grad is not None for p in (*method.tile_projection.parameters(), *method.jigsaw_head.parameters()))
    normaliser = float(method.log_normaliser)
    method.after_step([out])
    assert not torch.allclose(method.bank.features[indices], before)  # EMA towards f(v_I)
    assert torch.equal(method.bank.features[4:], others)  # only the batch's rows
    method.training_step(_views(4, seed=5))
    assert float(method.log_normaliser) == normaliser  # estimated once
    method.options.normaliser = "per_step"
    method.training_step(_views(4, seed=6))
    assert float(method.log_normaliser) != normaliser  # estimated again at every step
    with pytest.raises(ConfigError, match="pirl does not run under torchrun"):
        spec.create(settings, build_encoder("digits_convnet", "linear", D, in_channels=1), BuildContext(20, D, True))


def test_two_steps_before_one_optimiser_step_enqueue_both_batches_and_move_the_key_encoder_once() -> None:
    """Gradient accumulation: every output's keys reach the queue, in order; the momentum update is per step."""
    method = _method("moco", _encoder(), base_momentum=0.9, final_momentum=0.9, symmetric=False, queue_size=20)
    first, second = _views(3, seed=1), _views(3, seed=2)
    with torch.no_grad():
        keys = [halves(method.key_encoder(batch.images))[1] for batch in (first, second)]
    key_before = [p.clone() for p in method.key_encoder.parameters()]
    outputs = [method.training_step(first), method.training_step(second)]
    sum(out.loss for out in outputs).backward()
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.sub_(0.5 * p.grad)
    method.after_step(outputs)
    assert torch.allclose(method.queue.rows(), nn.functional.normalize(torch.cat(keys), dim=1), atol=1e-6)
    for key, old, query in zip(method.key_encoder.parameters(), key_before, method.encoder.parameters(), strict=True):
        assert torch.allclose(key, 0.9 * old + 0.1 * query)  # once, not twice


def _loss_with_predictor(method: Method, batch: Batch, weight: torch.Tensor) -> torch.Tensor:
    """BYOL's or SimSiam's loss of ``batch`` written out with the linear predictor ``weight``."""
    from invprop.core.distillation_losses import byol_loss, negative_cosine

    with torch.no_grad():
        z = method.encode(batch.images)
        p1, p2 = halves(z @ weight.T)
        if isinstance(method, BYOL):
            t1, t2 = halves(method.target(batch.images))
            return byol_loss(p1, t2) + byol_loss(p2, t1)
        z1, z2 = halves(z)
        return negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2


@pytest.mark.parametrize("name", ["byol", "simsiam"])
def test_a_direct_predictor_is_set_after_each_step_from_the_step_s_online_projections(name: str) -> None:
    from invprop.core.direct_prediction import batch_correlation, direct_predictor_weight

    method = _method(name, _encoder(), predictor="direct", direct_rho=0.5, direct_eps=0.2)
    batch = _views(4)
    out = method.training_step(batch)
    initial = method.predictor.weight.clone()  # a step uses the weight set before it
    assert float(out.loss.detach()) == pytest.approx(float(_loss_with_predictor(method, batch, initial)), rel=1e-5)
    with torch.no_grad():
        z = method.encode(batch.images)
    method.after_step([out])
    first = direct_predictor_weight(batch_correlation(z), 0.2)
    assert torch.allclose(method.predictor.weight, first, atol=1e-5)
    following = _views(4, seed=9)
    assert float(method.training_step(following).loss.detach()) == pytest.approx(
        float(_loss_with_predictor(method, following, first)), rel=1e-5
    )
    # Chunks of 2 and 6 images before one optimiser step give the predictor of their 8 images together (rho 0.5).
    chunks = [_views(2, seed=2), _views(6, seed=3)]
    whole = torch.cat([halves(c.images)[0] for c in chunks] + [halves(c.images)[1] for c in chunks])
    with torch.no_grad():
        running = 0.5 * batch_correlation(z) + 0.5 * batch_correlation(method.encode(whole))
    method.after_step([method.training_step(c) for c in chunks])
    assert torch.allclose(method.predictor.weight, direct_predictor_weight(running, 0.2), atol=1e-5)


def test_directpred_is_byol_with_the_direct_predictor_whatever_its_section_says() -> None:
    from invprop.models.direct_predictor import DirectPredictor

    method = _method("directpred", _encoder(), predictor="mlp")
    assert isinstance(method, BYOL) and isinstance(method.predictor, DirectPredictor)


def test_simsiam_with_a_direct_predictor_resumes_exactly(tmp_path) -> None:
    from invprop.config import from_dict, preset
    from resume_check import assert_resumes_exactly

    cfg = from_dict({"epochs": 2, "simsiam": {"predictor": "direct"}}, base=preset("digits", "simsiam"))
    state = assert_resumes_exactly(cfg, tmp_path)
    assert any(key.endswith("predictor.correlation") for key in state)
