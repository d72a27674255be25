from __future__ import annotations

import pytest
import torch

from invprop.evaluation.linear import linear_protocol
from invprop.evaluation.linear_probe import fit_linear_probe, stratified_split


def separable(n: int = 60, classes: int = 3, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Well separated classes (fixed centres); ``seed`` draws the noise, so other seeds give fresh samples."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 10
    y = torch.arange(n) % classes
    return centres[y] + torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), y


def test_probe_separates_linearly_separable_features_perfectly() -> None:
    x, y = separable()
    probe = fit_linear_probe(x, y, 3, weight_decay=1e-4)
    assert torch.equal(probe.logits(x).argmax(1), y)
    tx, ty = separable(seed=7)  # fresh samples of the same classes
    assert torch.equal(probe.logits(tx).argmax(1), ty)


def test_probe_is_deterministic_and_decay_shrinks_weights() -> None:
    x, y = separable()
    a = fit_linear_probe(x, y, 3, 1e-3)
    b = fit_linear_probe(x, y, 3, 1e-3)
    assert torch.equal(a.weight, b.weight)
    assert fit_linear_probe(x, y, 3, 1.0).weight.norm() < a.weight.norm()


def test_probe_validates_inputs() -> None:
    x, y = separable()
    with pytest.raises(ValueError, match="labels must lie"):
        fit_linear_probe(x, y, 2, 0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        fit_linear_probe(x, y, 3, -1.0)


def test_stratified_split_holds_out_every_class_reproducibly() -> None:
    y = torch.tensor([0] * 20 + [1] * 10 + [2] * 1)
    train, val = stratified_split(y, 0.1, torch.Generator().manual_seed(0))
    again, _ = stratified_split(y, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(train, again)
    assert sorted(y[val].tolist()) == [0, 0, 1]  # 10% of each class, at least one; a singleton stays in train
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == len(y)


def test_protocol_never_looks_at_the_test_split_to_choose_the_decay() -> None:
    x, y = separable(90)
    tx, ty = separable(30, seed=1)
    first = linear_protocol(x, y, tx, ty, 3)
    # Scrambling the test labels changes the test score but not the choice made on the validation split.
    second = linear_protocol(x, y, tx, ty[torch.randperm(30, generator=torch.Generator().manual_seed(0))], 3)
    assert first["linear_weight_decay"] == second["linear_weight_decay"]
    assert first["linear_val_top1"] == second["linear_val_top1"]
    assert set(first["linear_val_top1"]) == {"0.0", "1e-05", "0.0001", "0.001", "0.01"}
