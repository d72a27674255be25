"""CMC as a method: each view's embedding against the other view's memory (the same image's row the positive, drawn
rows the negatives) in both directions, the banks moving towards each view's embeddings, the NCE form, and an
encoder without a colour split refused in one line."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from invprop.errors import ConfigError
from invprop.methods.contrastive.cmc import CMC, CMCSettings
from invprop.methods.method import Batch, BuildContext
from invprop.models import build_encoder

D, N = 8, 20
NORMALISATION = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _cmc(**options: object) -> CMC:
    torch.manual_seed(0)
    encoder = build_encoder("small_convnet", "linear", D, colour_split="lab", normalisation=NORMALISATION)
    return CMC(CMCSettings(negatives=5, **options), encoder, BuildContext(N, D))  # type: ignore[arg-type]


def _batch() -> Batch:
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return Batch.of(torch.tensor([3, 7, 11, 19]), images)


def test_the_loss_contrasts_each_view_with_the_other_views_memory_per_sample() -> None:
    method = _cmc(temperature=0.1)
    batch = _batch()
    torch.manual_seed(5)
    out = method.training_step(batch)
    torch.manual_seed(5)
    draws = torch.randint(N, (5,))
    with torch.no_grad():
        joined = method.encoder(batch.images)
    views = [F.normalize(joined[:, :D], dim=1), F.normalize(joined[:, D:], dim=1)]
    banks = [bank.features for bank in method.view_banks]
    expected = 0.0
    for i, j in ((0, 1), (1, 0)):
        for b, row in enumerate(batch.indices.tolist()):
            anchor = views[i][b]
            scores = [float(anchor @ banks[j][row]) / 0.1] + [float(anchor @ banks[j][k]) / 0.1 for k in draws]
            expected += (-scores[0] + math.log(sum(math.exp(s) for s in scores))) / 4
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_after_a_step_each_bank_moves_towards_its_views_embeddings() -> None:
    method = _cmc(bank_momentum=0.0)
    batch = _batch()
    out = method.training_step(batch)
    method.after_step([out])
    with torch.no_grad():
        joined = method.encoder(batch.images)
    for view, bank in enumerate(method.view_banks):
        fresh = F.normalize(joined[:, view * D : (view + 1) * D], dim=1)
        assert torch.allclose(bank.features[batch.indices], fresh, atol=1e-5)


def test_the_nce_form_trains_and_sets_its_normaliser() -> None:
    method = _cmc(loss="nce")
    out = method.training_step(_batch())
    out.loss.backward()
    assert torch.isfinite(out.loss) and float(method.log_normaliser) != 0.0
    grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_an_encoder_of_one_backbone_is_refused_in_one_line() -> None:
    encoder = build_encoder("small_convnet", "linear", D)
    with pytest.raises(ConfigError, match="method cmc needs one backbone per view: set model.colour_split"):
        CMC(CMCSettings(), encoder, BuildContext(N, D))
