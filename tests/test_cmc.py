"""CMC as a method: each view's embedding against the other view's memory (the same image's row the positive, drawn
rows the negatives) in both directions, the banks moving towards each view's embeddings, the NCE form, and an
encoder without a colour split refused in one line."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from invprop.errors import ConfigError
from invprop.methods import METHODS
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


def _views(method: CMC, batch: Batch) -> list[torch.Tensor]:
    """Each view's L2-normalised embedding of ``batch``, recomputed outside the method: the first D columns of the
    encoder's output are L's, the next D ab's."""
    with torch.no_grad():
        joined = method.encoder(batch.images)
    return [F.normalize(joined[:, view * D : (view + 1) * D], dim=1) for view in range(2)]


def test_the_loss_contrasts_each_view_with_the_other_views_memory_per_sample() -> None:
    method = _cmc(temperature=0.1)
    batch = _batch()
    torch.manual_seed(5)
    out = method.training_step(batch)
    torch.manual_seed(5)
    draws = torch.randint(N, (5,))
    views = _views(method, batch)
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
    for bank, fresh in zip(method.view_banks, _views(method, batch), strict=True):
        assert torch.allclose(bank.features[batch.indices], fresh, atol=1e-5)


def test_the_nce_form_per_sample_each_direction_with_its_own_normaliser() -> None:
    method = _cmc(loss="nce", temperature=0.1)
    batch = _batch()
    torch.manual_seed(5)
    out = method.training_step(batch)
    torch.manual_seed(5)
    draws = torch.randint(N, (5,)).tolist()
    views = _views(method, batch)
    banks = [bank.features for bank in method.view_banks]
    noise = 5 / N  # m / N: the m draws of a uniform noise over N rows
    expected = 0.0
    for i, j in ((0, 1), (1, 0)):
        scores = [[float(views[i][b] @ banks[j][k]) / 0.1 for k in draws] for b in range(4)]
        log_z = math.log(sum(math.exp(s) for row in scores for s in row) / (4 * 5) * N)  # Z = N x mean exp(s / tau)
        for b, row in enumerate(batch.indices.tolist()):
            p_pos = math.exp(float(views[i][b] @ banks[j][row]) / 0.1 - log_z)
            p_neg = [math.exp(s - log_z) for s in scores[b]]
            term = -math.log(p_pos / (p_pos + noise)) - sum(math.log(noise / (p + noise)) for p in p_neg)
            expected += term / 4
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-4)


def test_the_banks_keep_an_ema_of_each_views_embeddings() -> None:
    method = _cmc(bank_momentum=0.5)
    batch = _batch()
    before = [bank.features[batch.indices].clone() for bank in method.view_banks]
    out = method.training_step(batch)
    method.after_step([out])
    for bank, old, fresh in zip(method.view_banks, before, _views(method, batch), strict=True):
        expected = F.normalize(0.5 * old + 0.5 * fresh, dim=1)
        assert torch.allclose(bank.features[batch.indices], expected, atol=1e-5)


def test_other_methods_refuse_an_encoder_of_one_backbone_per_group() -> None:
    encoder = build_encoder("small_convnet", "linear", D, colour_split="lab", normalisation=NORMALISATION)
    spec = METHODS.get("simclr")
    with pytest.raises(ConfigError, match="method simclr trains one backbone on the whole image"):
        spec.create(spec.new_sections(), encoder, BuildContext(N, D))


def test_an_encoder_of_one_backbone_is_refused_in_one_line() -> None:
    encoder = build_encoder("small_convnet", "linear", D)
    with pytest.raises(ConfigError, match="method cmc needs one backbone per view: set model.colour_split"):
        CMC(CMCSettings(), encoder, BuildContext(N, D))
