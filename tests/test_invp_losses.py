from __future__ import annotations

import math

import pytest
import torch

from authors_reference import authors_objective as reference_objective
from conftest import random_graph
from devices import cuda_only
from invprop.core.bank import MemoryBank
from invprop.core.graph import propagate
from invprop.core.invp_losses import (
    InvariancePropagationLoss,
    instance_loss,
    invariance_loss,
    paper_invariance_loss,
    select_positives,
    set_log_probability,
    total_loss,
)


def make_bank(n: int = 64, d: int = 8, k: int = 3, seed: int = 0) -> MemoryBank:
    torch.manual_seed(seed)
    bank = MemoryBank(n, d, num_neighbors=k)
    bank.neighbors.copy_(random_graph(n, k, torch.Generator().manual_seed(seed)))
    return bank


def direct_losses(
    emb, idx, bank, tau, n_bg, steps, n_pos, exact=True, hard_pos=True, hard_neg=True, exclusive=True, paper=False
):
    """Eqs. 3-6 written out per anchor with Python sets and loops (no shared code with the library). ``paper``: the
    paper's background B_i = H_i united with (M_i minus P_i) for the invariance term."""
    v = torch.nn.functional.normalize(emb.double(), dim=1)
    feats = bank.features.double()
    table = bank.neighbors.tolist()
    ins, inv = [], []
    for row, i in enumerate(idx.tolist()):
        s = (feats @ v[row]) / tau  # (N,)
        order = sorted(range(len(s)), key=lambda j: -float(s[j]))
        background = order[: min(n_bg, len(s))] if hard_neg else list(range(len(s)))
        ins.append(-(s[i] - torch.logsumexp(s[background], 0)))
        if exact:
            seen, frontier, pos = {i}, [i], []
            for _ in range(steps):
                nxt = []
                for node in frontier:
                    for nb in table[node]:
                        if nb not in seen:
                            seen.add(nb)
                            pos.append(nb)
                            nxt.append(nb)
                frontier = nxt
        else:
            hop = list(table[i])
            pos = list(hop)
            for _ in range(steps - 1):
                hop = [nb for node in hop for nb in table[node]]
                pos += hop
        chosen = sorted(pos, key=lambda j: float(s[j]), reverse=not hard_pos)[:n_pos]
        if paper:
            rest = [j for j in background if j not in pos and not (exclusive and j == i)]
            log_denom = torch.logsumexp(s[list(chosen) + rest], 0)
        elif exclusive and not exact:  # the authors' form: subtract the anchor's term, wherever its row is
            log_denom = torch.log(torch.exp(s[background]).sum() - torch.exp(s[i]))
        else:
            log_denom = torch.logsumexp(s[[j for j in background if not (exclusive and j == i)]], 0)
        inv.append(-(torch.logsumexp(s[chosen], 0) - log_denom))
    return torch.stack(ins).mean(), torch.stack(inv).mean()


CASES = [
    dict(),
    dict(exclusive=False),
    dict(hard_pos=False),
    dict(hard_neg=False),
    dict(exact=False),
    dict(exact=False, hard_pos=False, exclusive=False),
    dict(paper=True),
    dict(paper=True, exclusive=False),
    dict(paper=True, hard_neg=False),
    dict(paper=True, exact=False),
]


@pytest.mark.parametrize("case", CASES, ids=[str(c) or "default" for c in CASES])
def test_loss_terms_match_direct_equations(case: dict) -> None:
    bank = make_bank()
    emb = torch.randn(6, 8)
    idx = torch.tensor([0, 5, 9, 17, 33, 63])
    tau, n_bg, steps, n_pos = 0.1, 20, 2, 5
    loss = InvariancePropagationLoss(
        tau,
        n_bg,
        steps,
        n_pos,
        exact=case.get("exact", True),
        hard_positives=case.get("hard_pos", True),
        hard_negatives=case.get("hard_neg", True),
        exclusive=case.get("exclusive", True),
        background="paper" if case.get("paper") else "nearest",
    )
    out = loss(emb, idx, bank)
    ref_ins, ref_inv = direct_losses(emb, idx, bank, tau, n_bg, steps, n_pos, **case)
    torch.testing.assert_close(out.instance.double(), ref_ins, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.invariance.double(), ref_inv, rtol=1e-5, atol=1e-5)


def test_background_larger_than_bank_is_capped() -> None:
    bank = make_bank(n=30)
    emb, idx = torch.randn(4, 8), torch.tensor([1, 2, 3, 4])
    loss = InvariancePropagationLoss(0.1, n_background=4096, steps=2, n_hard_positives=5)
    out = loss(emb, idx, bank)
    assert out.background.shape == (4, 30)
    ref_ins, ref_inv = direct_losses(emb, idx, bank, 0.1, 30, 2, 5)
    torch.testing.assert_close(out.instance.double(), ref_ins, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.invariance.double(), ref_inv, rtol=1e-5, atol=1e-5)


def authors_objective(
    points, point_indices, bank_points, neigh, t, n_background, layers, n_pos, exclusive=True, hard_pos=True
):
    """The two losses of :func:`invprop.core.reference.authors_objective` (the authors' dense formulation)."""
    loss_a, loss_b, _ = reference_objective(
        points, point_indices, bank_points, neigh, t, n_background, layers, n_pos, exclusive, hard_pos
    )
    return loss_a, loss_b


@pytest.mark.parametrize("exclusive,hard_pos", [(True, True), (False, True), (True, False)])
def test_concatenation_mode_equals_authors_objective(exclusive: bool, hard_pos: bool) -> None:
    # The authors' settings (k=4, l=3, t=0.07, n_pos=50) on a bank small enough for exact float64 comparison.
    n, k = 200, 4
    torch.manual_seed(1)
    bank = MemoryBank(n, 16, num_neighbors=k)
    bank.features.copy_(bank.features.double().float())
    idx = torch.randperm(n)[:16]
    # Embeddings close to their own rows, so each anchor is inside its own top-N_b (as in training).
    emb = bank.features[idx] + 0.3 * torch.randn(16, 16)
    loss = InvariancePropagationLoss(
        0.07, n_background=64, steps=3, n_hard_positives=50, exact=False, hard_positives=hard_pos, exclusive=exclusive
    )
    out = loss(emb, idx, bank)
    ref_a, ref_b = authors_objective(
        emb.double(), idx, bank.features.double(), bank.neighbors, 0.07, 64, 3, 50, exclusive, hard_pos
    )
    torch.testing.assert_close(out.instance.double(), ref_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.invariance.double(), ref_b, rtol=1e-4, atol=1e-4)


def test_concatenation_mode_equals_authors_objective_when_anchor_is_outside_its_background() -> None:
    torch.manual_seed(2)
    bank = MemoryBank(200, 16, num_neighbors=4)
    idx = torch.randperm(200)[:32]
    emb = torch.randn(32, 16)  # unrelated to the anchors' rows: many anchors fall outside their top-N_b
    loss = InvariancePropagationLoss(0.5, n_background=64, steps=3, n_hard_positives=50, exact=False)
    out = loss(emb, idx, bank)
    assert not (out.background == idx[:, None]).any(dim=1).all()
    ref_a, ref_b = authors_objective(emb.double(), idx, bank.features.double(), bank.neighbors, 0.5, 64, 3, 50)
    torch.testing.assert_close(out.instance.double(), ref_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.invariance.double(), ref_b, rtol=1e-4, atol=1e-4)


def test_gradients_flow_to_unnormalised_embeddings() -> None:
    bank = make_bank()
    emb = (torch.randn(4, 8) * 5).requires_grad_()
    out = InvariancePropagationLoss(0.1, 20, 2, 5)(emb, torch.tensor([0, 1, 2, 3]), bank)
    total_loss(out.instance, out.invariance, 0.6, 1.0).backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    # Gradients are orthogonal to each embedding (the loss depends on its direction only).
    radial = (emb.grad * emb.detach()).sum(dim=1)
    torch.testing.assert_close(radial, torch.zeros(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_safe_under_low_precision_autocast(dtype: torch.dtype) -> None:
    bank = make_bank(n=500, d=16)
    idx = torch.arange(8)
    emb = (bank.features[idx] * 50).requires_grad_()  # huge logits: exp(1/0.01) overflows half precision
    loss = InvariancePropagationLoss(0.01, 100, 2, 5)
    reference = loss(emb, idx, bank)
    with torch.autocast("cpu", dtype=dtype):
        out = loss(emb.to(dtype), idx, bank)
    assert out.instance.dtype == torch.float32
    assert torch.isfinite(out.instance) and torch.isfinite(out.invariance)
    torch.testing.assert_close(out.instance, reference.instance, rtol=0.05, atol=0.05)
    (out.instance + out.invariance).backward()
    assert torch.isfinite(emb.grad).all()


def test_anchors_without_positives_are_left_out() -> None:
    bank = make_bank(n=20)
    bank.neighbors.fill_(-1)
    bank.neighbors[0] = torch.tensor([1, 2, 3])
    emb = torch.randn(2, 8, requires_grad=True)
    loss = InvariancePropagationLoss(0.1, 10, 1, 5)
    out = loss(emb, torch.tensor([0, 5]), bank)
    only_first = loss(emb[:1], torch.tensor([0]), bank)
    torch.testing.assert_close(out.invariance, only_first.invariance)
    bank.neighbors.fill_(-1)
    empty = loss(emb, torch.tensor([0, 5]), bank)
    assert float(empty.invariance.detach()) == 0.0
    empty.invariance.backward()  # still part of the graph


def test_select_positives_hardest_and_easiest() -> None:
    logits = torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.7]])
    mask = torch.tensor([[True, True, True, False, True]])
    hard, hard_mask, cols = select_positives(logits, mask, 2, hardest=True)
    assert cols.tolist() == [[1, 0]] and hard_mask.all()
    easy, _, cols = select_positives(logits, mask, 2, hardest=False)
    assert cols.tolist() == [[2, 4]]
    _, many_mask, _ = select_positives(logits, mask, 10)
    assert many_mask.sum() == 4  # fewer positives than asked: all of them, padding masked


def test_pure_functions_match_formulas() -> None:
    target = torch.tensor([2.0])
    background = torch.tensor([[2.0, 1.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1))
    assert instance_loss(target, background).item() == pytest.approx(expected, rel=1e-6)
    pos = torch.tensor([[1.0, 0.0]])
    assert set_log_probability(pos, None, background).item() == pytest.approx(
        math.log((math.e + 1) / (math.exp(2) + math.e + 1)), rel=1e-6
    )
    assert invariance_loss(pos, torch.tensor([[True, False]]), background).item() == pytest.approx(
        -math.log(math.e / (math.exp(2) + math.e + 1)), rel=1e-6
    )
    assert total_loss(torch.tensor(1.0), torch.tensor(2.0), 0.6, 0.5).item() == pytest.approx(1.6)


def test_paper_background_adds_the_hard_positives_to_the_negatives() -> None:
    hard = torch.tensor([[1.0, 0.0, 5.0]])
    hard_mask = torch.tensor([[True, True, False]])
    negatives = torch.tensor([[2.0, 1.0, 3.0]])
    negative_mask = torch.tensor([[True, False, True]])
    expected = -math.log((math.e + 1) / (math.e + 1 + math.exp(2) + math.exp(3)))
    got = paper_invariance_loss(hard, hard_mask, negatives, negative_mask)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    nothing_else = paper_invariance_loss(hard, hard_mask, negatives, torch.zeros_like(negative_mask))
    assert nothing_else.item() == pytest.approx(0.0, abs=1e-7)  # B_i = H_i: the positives carry all the mass


@pytest.mark.parametrize("kwargs", [{"temperature": 0}, {"n_background": 0}, {"steps": 0}, {"n_hard_positives": 0}])
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        InvariancePropagationLoss(**kwargs)


def test_exact_positive_set_is_smaller_than_concatenation() -> None:
    bank = make_bank(n=30, k=4)
    exact, exact_mask = propagate(bank.neighbors, torch.arange(30), 3)
    concat, _ = propagate(bank.neighbors, torch.arange(30), 3, exact=False)
    assert (exact_mask.sum(dim=1) <= 29).all() and concat.shape[1] == 84


@cuda_only
def test_cuda_matches_cpu_under_bf16_autocast() -> None:
    bank = make_bank(n=300, d=16)
    idx = torch.arange(10)
    emb = torch.randn(10, 16)
    loss = InvariancePropagationLoss(0.07, 100, 3, 20)
    cpu = loss(emb, idx, bank)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = loss(emb.cuda(), idx.cuda(), bank.cuda())
    torch.testing.assert_close(gpu.instance.cpu(), cpu.instance, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.invariance.cpu(), cpu.invariance, rtol=1e-4, atol=1e-4)


#: docs/benchmarks.md, benchmark 3: one objective step on an ImageNet-sized bank (N = 1.28M, D = 128, B = 256, the
#: authors' N_b = 4096, k = 4, l = 3, P = 50) needs at most this much device memory beyond the bank and its
#: neighbour table: the 256 MiB block of similarities of the no-grad top-k and its workspace, and the 64 MiB blocks
#: of gathered rows.
OBJECTIVE_WORKSPACE_LIMIT_MIB = 1024


@cuda_only
def test_objective_step_memory_at_imagenet_scale() -> None:
    n, d, b = 1_281_167, 128, 256
    generator = torch.Generator(device="cuda").manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(n, d, device="cuda", generator=generator), dim=1)
    neighbors = torch.randint(0, n, (n, 4), device="cuda", generator=generator)
    bank = MemoryBank(n, d, 0.5, 4, device="cuda", features=features, neighbors=neighbors)
    del features, neighbors
    indices = torch.randperm(n, device="cuda", generator=generator)[:b]
    embeddings = bank.features[indices] + 0.5 * torch.randn(b, d, device="cuda", generator=generator)
    objective = InvariancePropagationLoss(0.07, 4096, 3, 50)
    assert objective.similarity == "auto"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    queries = embeddings.clone().requires_grad_()
    out = objective(queries, indices, bank)
    (out.instance + 0.6 * out.invariance).backward()
    bank.refresh_neighbors(indices, queries.detach(), candidates=out.background)
    bank.update(indices, queries.detach())
    torch.cuda.synchronize()
    workspace_mib = (torch.cuda.max_memory_allocated() - before) / 2**20
    assert bool(out.hard_positive_mask.any()) and torch.isfinite(queries.grad).all()
    assert workspace_mib <= OBJECTIVE_WORKSPACE_LIMIT_MIB, f"{workspace_mib:.0f} MiB"


@pytest.mark.parametrize("exact", [True, False])
def test_gather_and_dense_similarity_give_the_same_objective(exact: bool) -> None:
    bank = make_bank(n=120, d=8, k=3)
    idx = torch.tensor([0, 5, 17, 80])
    base = torch.randn(4, 8, dtype=torch.float32)
    results = []
    for strategy in ("dense", "gather"):
        emb = base.clone().requires_grad_()
        out = InvariancePropagationLoss(0.1, 40, 2, 6, exact=exact, similarity=strategy)(emb, idx, bank)
        (out.instance + out.invariance).backward()
        results.append((out.instance.detach(), out.invariance.detach(), out.background, out.hard_positives, emb.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_knn_positive_source_uses_the_nearest_bank_rows() -> None:
    bank = make_bank(n=80, d=8, k=3)
    idx = torch.tensor([4, 9, 30])
    emb = bank.features[idx] + 0.1 * torch.randn(3, 8)
    loss = InvariancePropagationLoss(
        0.1, n_background=20, steps=2, n_hard_positives=50, positives="knn", knn_positives=6
    )
    out = loss(emb, idx, bank)
    q = torch.nn.functional.normalize(emb, dim=1)
    sims = q @ bank.features.T
    for row in range(3):
        order = [int(j) for j in sims[row].argsort(descending=True) if int(j) != int(idx[row])][:6]
        assert sorted(out.positives[row].tolist()) == sorted(order)
    # Invariance term written out: all 6 positives (P=50 > K) over M_i without the anchor's own row.
    logits = sims / 0.1
    expected = []
    for row in range(3):
        bg = [int(j) for j in out.background[row] if int(j) != int(idx[row])]
        expected.append(torch.logsumexp(logits[row, bg], 0) - torch.logsumexp(logits[row, out.positives[row]], 0))
    torch.testing.assert_close(out.invariance, torch.stack(expected).mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hard_negatives", [True, False])
def test_no_positive_source_is_instance_discrimination(hard_negatives: bool) -> None:
    bank = make_bank(n=60, d=8, k=3)
    idx = torch.tensor([1, 2, 3, 50])
    emb = torch.randn(4, 8, requires_grad=True)
    out = InvariancePropagationLoss(0.2, n_background=16, positives="none", hard_negatives=hard_negatives)(
        emb, idx, bank
    )
    assert float(out.invariance.detach()) == 0.0 and out.positives.shape == (4, 0)
    logits = torch.nn.functional.normalize(emb, dim=1) @ bank.features.T / 0.2
    background = logits.topk(16, dim=1).values if hard_negatives else logits
    expected = (torch.logsumexp(background, 1) - logits.gather(1, idx[:, None]).squeeze(1)).mean()
    torch.testing.assert_close(out.instance, expected)
    out.instance.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_positive_source_is_validated() -> None:
    with pytest.raises(ValueError, match="positives must be one of"):
        InvariancePropagationLoss(positives="labels")
    with pytest.raises(ValueError, match="knn_positives"):
        InvariancePropagationLoss(positives="knn", knn_positives=0)


def test_knn_positives_taken_from_the_background_equal_a_separate_search() -> None:
    bank = make_bank(n=80, d=8, k=3)
    idx = torch.tensor([4, 9, 30, 31])
    emb = bank.features[idx] + 0.2 * torch.randn(4, 8)
    loss = InvariancePropagationLoss(0.1, n_background=20, positives="knn", knn_positives=6)
    out = loss(emb, idx, bank)
    separate, mask = loss.discover_positives(torch.nn.functional.normalize(emb, dim=1), idx, bank)
    assert mask.all() and torch.equal(out.positives.sort(dim=1).values, separate.sort(dim=1).values)
    assert not (out.positives == idx[:, None]).any()


#: Loss settings compared between a bank split over 2 processes and the same bank in one process.
SHARDED_CASES = {
    "invp": {},
    "invp-authors-concatenation": {"exact": False},
    "invp-inclusive": {"exclusive": False},
    "invp-paper-background": {"background": "paper"},
    "knn-positives-paper-background": {"positives": "knn", "knn_positives": 5, "background": "paper"},
    "knn-positives": {"positives": "knn", "knn_positives": 5},
    "knn-positives-beyond-background": {"positives": "knn", "knn_positives": 20},
    "insdis-hard": {"positives": "none"},
    "insdis": {"positives": "none", "hard_negatives": False},
    "invp-whole-bank": {"hard_negatives": False},
    "invp-gathered": {"similarity": "gather"},
    "invp-authors-concatenation-gathered": {"exact": False, "similarity": "gather"},
    "knn-positives-gathered": {"positives": "knn", "knn_positives": 5, "similarity": "gather"},
}


def _sharded_setup() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    features = torch.nn.functional.normalize(torch.randn(61, 8, generator=g), dim=1)
    neighbors = MemoryBank(61, 8, num_neighbors=3, features=features).neighbors
    embeddings = features[torch.arange(8) * 7] + 0.3 * torch.randn(8, 8, generator=g)
    return features, neighbors, embeddings, torch.arange(8) * 7


def _sharded_losses(rank: int, world: int) -> dict[str, dict[str, torch.Tensor]]:
    from invprop.distributed.partition import RowPartition

    features, neighbors, embeddings, indices = _sharded_setup()
    bank = MemoryBank(61, 8, num_neighbors=3, features=features, neighbors=neighbors, partition=RowPartition.split(61))
    rows = slice(4 * rank, 4 * rank + 4)
    results = {}
    for name, kwargs in SHARDED_CASES.items():
        emb = embeddings[rows].clone().requires_grad_(True)
        out = InvariancePropagationLoss(0.1, n_background=12, steps=2, n_hard_positives=4, **kwargs)(
            emb, indices[rows], bank
        )
        total = out.instance + 0.6 * out.invariance
        (total / world).backward()  # the summed objective over processes is then the single-process one
        results[name] = {"total": total.detach(), "grad": emb.grad, "positives": out.positives,
                         "background": out.background if out.background is not None else torch.empty(0)}  # fmt: skip
    return results


def test_sharded_bank_loss_and_gradients_equal_the_unsharded_ones(tmp_path) -> None:
    from gloo import run_gloo

    results = run_gloo(_sharded_losses, 2, tmp_path)
    features, neighbors, embeddings, indices = _sharded_setup()
    bank = MemoryBank(61, 8, num_neighbors=3, features=features, neighbors=neighbors)
    for name, kwargs in SHARDED_CASES.items():
        emb = embeddings.clone().requires_grad_(True)
        out = InvariancePropagationLoss(0.1, n_background=12, steps=2, n_hard_positives=4, **kwargs)(emb, indices, bank)
        total = out.instance + 0.6 * out.invariance
        total.backward()
        assert float(total.detach()) > 0, name
        for rank, result in enumerate(results):
            got = result[name]
            torch.testing.assert_close(got["total"], total.detach(), rtol=1e-5, atol=1e-5, msg=name)
            torch.testing.assert_close(got["grad"], emb.grad[4 * rank : 4 * rank + 4], rtol=1e-5, atol=1e-5, msg=name)
            assert torch.equal(got["positives"], out.positives), name
            if out.background is not None:
                assert torch.equal(got["background"], out.background), name
