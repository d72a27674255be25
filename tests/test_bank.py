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
    [
        ({"size": 1, "dim": 4}, "size"),
        ({"size": 10, "dim": 0}, "dim"),
        ({"size": 10, "dim": 4, "momentum": 1.0}, "momentum"),
        ({"size": 5, "dim": 4, "num_neighbors": 5}, "num_neighbors"),
    ],
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


def _split_bank(rank: int, world: int) -> dict[str, object]:
    from invprop.distributed.partition import RowPartition

    torch.manual_seed(5)
    bank = MemoryBank(50, 4, momentum=0.5, num_neighbors=3, partition=RowPartition.split(50))
    initial = bank.features.clone()
    rng_after_init = torch.randn(1)
    bank.update(
        torch.tensor([0, 24, 25, 49]), torch.arange(16.0).view(4, 4)
    )  # rank 0 holds rows 0-24, rank 1 rows 25-49
    recall = bank.sampled_recall(torch.arange(0, 50, 5))
    state = bank.state_dict()  # the whole bank, gathered on rank 0
    bank.rebuild_neighbors(chunk_size=7)
    rebuilt = bank.neighbors.clone()
    # Load a whole single-process state into the split bank: each process keeps its rows.
    whole = MemoryBank(
        50, 4, num_neighbors=3, features=torch.eye(4).repeat(13, 1)[:50] + 0.01 * torch.arange(50.0)[:, None]
    )
    bank.load_state_dict(whole.state_dict())
    return {"initial": initial, "rng": rng_after_init, "updated": state["features"], "recall": recall,
            "rebuilt": rebuilt, "loaded": bank.features.clone(), "whole": whole.features}  # fmt: skip


def test_split_bank_holds_its_rows_and_checkpoints_the_whole_bank(tmp_path) -> None:
    from gloo import run_gloo

    results = run_gloo(_split_bank, 2, tmp_path)
    torch.manual_seed(5)
    bank = MemoryBank(50, 4, momentum=0.5, num_neighbors=3)
    rng_after_init = torch.randn(1)
    torch.testing.assert_close(torch.cat([r["initial"] for r in results]), bank.features)  # same rows as one bank
    assert all(torch.equal(r["rng"], rng_after_init) for r in results)  # and the same RNG state afterwards
    bank.update(torch.tensor([0, 24, 25, 49]), torch.arange(16.0).view(4, 4))
    torch.testing.assert_close(results[0]["updated"], bank.features)
    assert results[1]["updated"].shape == (25, 4)  # other processes keep their own rows in their state
    assert results[0]["recall"] == results[1]["recall"] < 1.0  # the table predates the update
    bank.rebuild_neighbors()
    assert bank.sampled_recall(torch.arange(0, 50, 5)) == 1.0
    assert all(torch.equal(r["rebuilt"], bank.neighbors) for r in results)
    torch.testing.assert_close(torch.cat([r["loaded"] for r in results]), results[0]["whole"])


def test_faiss_rebuild_recall_is_measured_against_exact_search() -> None:
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 16, generator=g)
    points = centres[torch.arange(2000) % 20] + 0.3 * torch.randn(2000, 16, generator=g)
    bank = MemoryBank(2000, 16, num_neighbors=5, features=points)
    exact = bank.neighbors.clone()
    rows = torch.arange(0, 2000, 7)
    bank.rebuild_neighbors(search="faiss", faiss_lists=16, faiss_probe=16)  # every cell probed: exact results
    assert bank.sampled_recall(rows) == 1.0 and (bank.neighbors == exact).float().mean() > 0.99
    bank.rebuild_neighbors(search="faiss", faiss_lists=16, faiss_probe=1)  # one cell of 16: approximate
    recall = bank.sampled_recall(rows)
    assert 0.3 < recall < 1.0
    with pytest.raises(ValueError, match="search must be one of"):
        bank.rebuild_neighbors(search="annoy")
