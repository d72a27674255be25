from __future__ import annotations

import math

import torch

from invprop.core.diagnostics import label_agreement, positive_diagnostics, rows_contain_any


def test_label_agreement_counts_known_pairs_only() -> None:
    labels = torch.tensor([0, 0, 1, -1, 1])
    anchors = torch.tensor([0, 2])
    members = torch.tensor([[1, 2, 3], [4, 0, -1]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # Known pairs: (0,1) same, (0,2) different, (2,4) same, (2,0) different; row 3 unknown, padding masked.
    assert float(label_agreement(labels, anchors, members, mask)) == 0.5
    assert math.isnan(float(label_agreement(labels, torch.tensor([3]), members[:1], mask[:1])))


def test_rows_contain_any_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 30, (50, 7), generator=gen)
    values = torch.randint(0, 30, (50, 4), generator=gen)
    mask = torch.rand(50, 4, generator=gen) > 0.3
    brute = torch.tensor(
        [any(bool(m) and int(v) in r.tolist() for v, m in zip(vs, ms)) for r, vs, ms in zip(rows, values, mask)]
    )
    assert torch.equal(rows_contain_any(rows, values, mask), brute)
    assert not rows_contain_any(rows, values[:, :0], mask[:, :0]).any()


def test_positive_diagnostics_on_a_hand_made_batch() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    anchors = torch.tensor([0, 3])
    positives = torch.tensor([[1, 2, 3], [4, 0, -1]])
    positive_mask = positives >= 0
    hard = torch.tensor([[3], [4]])
    background = torch.tensor([[0, 1, 5], [3, 5, 2]])
    out = positive_diagnostics(
        labels, anchors, positives, positive_mask, hard, torch.ones_like(hard, dtype=torch.bool), background
    )
    assert abs(float(out["purity_positive"]) - 3 / 5) < 1e-6
    assert float(out["purity_hard_positive"]) == 1 / 2
    assert float(out["background_has_positive"]) == 1 / 2  # row 0 holds positive 1; row 1 holds none of {4, 0}
    assert float(out["background_same_label"]) == 2 / 4  # anchor rows themselves excluded
