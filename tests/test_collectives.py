from __future__ import annotations

from pathlib import Path

import torch

from gloo import run_gloo
from invprop.distributed.collectives import (
    LOCAL,
    all_gather_rows,
    all_reduce_max,
    all_reduce_sum,
    is_distributed,
    masked_logsumexp,
    rank,
    world_size,
)

WORLD = 2


def test_without_a_process_group_everything_is_local() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert not is_distributed() and world_size() == 1 and rank() == 0
    assert all_gather_rows(x) is x and all_reduce_sum(x) is x
    torch.testing.assert_close(all_reduce_max(x), x.detach())
    mask = torch.rand(3, 4) > 0.3
    expected = torch.logsumexp(x.detach().masked_fill(~mask, float("-inf")), dim=1)
    torch.testing.assert_close(masked_logsumexp(x, mask), expected)
    assert not is_distributed(LOCAL) and world_size(LOCAL) == 1 and rank(LOCAL) == 0


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """The same random inputs in every process (rank r uses its own slices)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "rows": torch.randn(WORLD * 3, 5, generator=g),  # rank r holds rows 3r..3r+2
        "weights": torch.randn(WORLD * 3, 5, generator=g),
        "logits": torch.randn(4, 7, generator=g) * 5,  # columns split 3 | 4 between the ranks
        "mask": torch.rand(4, 7, generator=g) > 0.3,
    }


def _gather_and_logsumexp(rank: int, world: int) -> dict[str, torch.Tensor]:
    data = _inputs()
    mine = data["rows"][3 * rank : 3 * rank + 3].clone().requires_grad_(True)
    gathered = all_gather_rows(mine)
    # The summed objective: each rank weights the gathered rows with its own weights (a rank-dependent loss).
    (gathered * data["weights"] * (rank + 1)).sum().backward()
    columns = slice(0, 3) if rank == 0 else slice(3, 7)
    logits = data["logits"][:, columns].clone().requires_grad_(True)
    lse = masked_logsumexp(logits, data["mask"][:, columns], group=None)  # None: the default group, every process
    (lse * torch.arange(1.0, 5.0)).sum().div(world).backward()  # every rank: the same loss, 1/W of it
    empty = masked_logsumexp(torch.zeros(4, 0) if rank == 0 else data["logits"][:, :2], None, group=None)
    total = all_reduce_sum(torch.full((2,), float(rank + 1), requires_grad=True))
    return {"gathered": gathered.detach(), "grad": mine.grad, "lse": lse.detach(), "lse_grad": logits.grad,
            "empty": empty, "sum": total.detach()}  # fmt: skip


def test_all_gather_rows_and_masked_logsumexp_over_the_group_match_one_process(tmp_path: Path) -> None:
    results = run_gloo(_gather_and_logsumexp, WORLD, tmp_path)
    data = _inputs()
    rows = data["rows"].clone().requires_grad_(True)
    (rows * data["weights"] * 1).sum().add((rows * data["weights"] * 2).sum()).backward()
    logits = data["logits"].clone().requires_grad_(True)
    lse = torch.logsumexp(logits.masked_fill(~data["mask"], float("-inf")), dim=1)
    (lse * torch.arange(1.0, 5.0)).sum().backward()
    for r, out in enumerate(results):
        torch.testing.assert_close(out["gathered"], data["rows"])
        torch.testing.assert_close(out["grad"], rows.grad[3 * r : 3 * r + 3], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out["lse"], lse.detach(), rtol=1e-5, atol=1e-5)
        columns = slice(0, 3) if r == 0 else slice(3, 7)
        torch.testing.assert_close(out["lse_grad"], logits.grad[:, columns], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out["empty"], torch.logsumexp(data["logits"][:, :2], dim=1))  # rank 0 held none
        torch.testing.assert_close(out["sum"], torch.full((2,), 3.0))
