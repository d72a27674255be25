from __future__ import annotations

import pytest
import torch

from invprop.core import bank as bank_module
from invprop.core.bank import MemoryBank
from invprop.core.graph import knn_graph


def test_init_unit_rows_and_real_neighbour_table() -> None:
    bank = MemoryBank(300, 16, num_neighbors=4)
    assert bank.features.shape == (300, 16)
    torch.testing.assert_close(bank.features.norm(dim=1), torch.ones(300))
    assert bank.neighbors.dtype == torch.int64 and bank.neighbors.shape == (300, 4)
    assert torch.equal(bank.neighbors, knn_graph(bank.features, 4))
    assert not (bank.neighbors == torch.arange(300)[:, None]).any()
    assert bank.neighbors.unique().numel() > 100  # not the authors' all-zeros table


def test_large_bank_starts_with_invalid_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bank_module, "EXACT_INIT_MAX_ROWS", 10)
    bank = MemoryBank(50, 8, num_neighbors=3)
    assert (bank.neighbors == -1).all()
    bank.rebuild_neighbors(chunk_size=7)
    assert torch.equal(bank.neighbors, knn_graph(bank.features, 3))


def test_ema_update_then_renormalise() -> None:
    bank = MemoryBank(20, 6, momentum=0.5)
    old = bank.features.clone()
    idx = torch.tensor([2, 5])
    emb = torch.randn(2, 6) * 3
    bank.update(idx, emb)
    fresh = torch.nn.functional.normalize(emb, dim=1)
    expected = torch.nn.functional.normalize(0.5 * old[idx] + 0.5 * fresh, dim=1)
    torch.testing.assert_close(bank.features[idx], expected)
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(bank.features[untouched], old[untouched])


def test_zero_momentum_overwrites() -> None:
    bank = MemoryBank(10, 4, momentum=0.0, num_neighbors=2)
    emb = torch.randn(1, 4)
    bank.update(torch.tensor([3]), emb)
    torch.testing.assert_close(bank.features[3], torch.nn.functional.normalize(emb, dim=1)[0])


def test_refresh_neighbors_online_rule() -> None:
    bank = MemoryBank(40, 8, num_neighbors=3)
    idx = torch.tensor([0, 1])
    emb = bank.features[idx] + 0.01 * torch.randn(2, 8)  # nearest row is the anchor itself
    bank.refresh_neighbors(idx, emb)
    sims = torch.nn.functional.normalize(emb, dim=1) @ bank.features.T
    sims[torch.arange(2), idx] = -2
    # same set (the authors' rule puts the spare (k+1)-th candidate in the anchor's slot, so order may differ)
    assert torch.equal(bank.neighbors[idx].sort(dim=1).values, sims.topk(3, dim=1).indices.sort(dim=1).values)


def test_neighbors_assignable_and_in_state_dict() -> None:
    bank = MemoryBank(10, 4, num_neighbors=2)
    table = torch.randint(0, 10, (10, 2))
    bank.neighbors.copy_(table)
    assert torch.equal(bank.neighbors, table)
    bank.neighbors = table.clone()
    assert set(bank.state_dict()) == {"features", "neighbors"}
    other = MemoryBank(10, 4, num_neighbors=2)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.neighbors, table) and torch.equal(other.features, bank.features)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"size": 1, "dim": 4}, "size"), ({"size": 10, "dim": 0}, "dim"), ({"size": 10, "dim": 4, "momentum": 1.0}, "momentum"),
     ({"size": 5, "dim": 4, "num_neighbors": 5}, "num_neighbors")],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MemoryBank(**kwargs)


def test_initial_features_and_neighbors_are_taken_as_given() -> None:
    feats = torch.randn(10, 4) * 3
    table = torch.randint(0, 10, (10, 2))
    bank = MemoryBank(10, 4, num_neighbors=2, features=feats, neighbors=table)
    torch.testing.assert_close(bank.features, torch.nn.functional.normalize(feats, dim=1))
    assert torch.equal(bank.neighbors, table)
    table[0, 0] = -5  # the bank keeps its own copy
    assert bank.neighbors[0, 0] != -5
    with pytest.raises(ValueError, match="initial features"):
        MemoryBank(10, 4, num_neighbors=2, features=torch.randn(9, 4))
    with pytest.raises(ValueError, match="initial neighbors"):
        MemoryBank(10, 4, num_neighbors=2, neighbors=torch.zeros(10, 3, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_bank_updates_in_float32_and_keeps_unit_rows(dtype: torch.dtype) -> None:
    feats = torch.randn(50, 16)
    full = MemoryBank(50, 16, momentum=0.5, num_neighbors=3, features=feats)
    half = MemoryBank(50, 16, momentum=0.5, num_neighbors=3, features=feats, dtype=dtype)
    assert half.features.dtype == dtype
    emb = torch.randn(5, 16)
    idx = torch.tensor([0, 7, 9, 20, 49])
    full.update(idx, emb)
    half.update(idx, emb)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(half.features.float(), full.features, atol=tol, rtol=0)
    torch.testing.assert_close(half.features.float().norm(dim=1), torch.ones(50), atol=tol, rtol=0)
    half.refresh_neighbors(idx, emb)
    assert (half.neighbors[idx] != idx[:, None]).all()
