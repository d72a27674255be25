from __future__ import annotations

import pytest
import torch

from invprop.config import from_dict, preset
from invprop.methods import METHODS
from invprop.models import build_encoder


def make(name: str, **loss):
    cfg = from_dict(
        {"method": name, "model": {"embedding_dim": 16}, "loss": {"n_background": 32, "n_hard_positives": 5, **loss}},
        base=preset("digits"),
    )
    encoder = build_encoder("digits_convnet", "mlp", 16, in_channels=1)
    return METHODS.get(name)(cfg, encoder, 100)


@pytest.mark.parametrize(
    "name,positives,hard_negatives",
    [("invp", "propagation", True), ("knn-positives", "knn", True), ("insdis-hard", "none", True), ("insdis", "none", False)],
)
def test_each_method_wires_its_objective_and_trains_a_step(name: str, positives: str, hard_negatives: bool) -> None:
    method = make(name)
    assert method.loss.positives == positives and method.loss.hard_negatives == hard_negatives
    method.set_diagnostic_labels(torch.arange(100) % 10)
    indices = torch.arange(8)
    before = method.bank.features[indices].clone()
    out = method.training_step(indices, torch.rand(8, 1, 8, 8), epoch=50)
    out.loss.backward()
    method.after_step()
    assert torch.isfinite(out.loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())
    assert not torch.equal(method.bank.features[indices], before)  # the EMA update ran
    if positives == "none":
        assert set(out.terms) == {"loss_ins"}
    else:
        assert {"loss_inv", "positives", "purity_positive", "purity_hard_positive", "background_has_positive"} <= set(out.terms)
        assert 0 <= float(out.terms["purity_positive"]) <= 1


def test_knn_positives_default_to_p_and_follow_the_config() -> None:
    assert make("knn-positives").loss.knn_positives == 5
    assert make("knn-positives", knn_positives=3).loss.knn_positives == 3


def test_diagnostics_are_off_without_labels_and_never_change_the_loss() -> None:
    torch.manual_seed(0)
    a = make("invp")
    b = make("invp")
    b.load_state_dict(a.state_dict())
    b.set_diagnostic_labels(torch.arange(100) % 10)
    images, indices = torch.rand(8, 1, 8, 8), torch.arange(8)
    a.eval(), b.eval()
    out_a, out_b = a.training_step(indices, images, 50), b.training_step(indices, images, 50)
    assert torch.equal(out_a.loss, out_b.loss)
    assert "purity_positive" not in out_a.terms and "purity_positive" in out_b.terms
