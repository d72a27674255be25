"""Benchmark: one InvP step with the memory bank replicated on every process vs split between them; graph rebuilds.

Part 1 times one objective step per bank size -- forward + backward of Eq. 7 w.r.t. the embeddings, then the
neighbour refresh and EMA update of the batch rows, everything a distributed training step does besides the encoder
-- with the bank replicated (each process holds N rows and gathers the others' batches) and split (each holds N/W
rows; queries are gathered and the top-k and log-sum-exp merged). It prints the median step time of each, their
ratio, and the bank memory per process.

Part 2 (``--rebuild-rows``) times a full neighbour-graph rebuild, exact (chunked) and with FAISS, on clustered
synthetic rows, and reports the FAISS graph's recall against exact search on a sample of rows.

Launch with torchrun (any W, including 1):

    torchrun --standalone --nproc_per_node=2 benchmarks/sharded_bank.py --device cpu --rows 100000 1000000 10000000
    torchrun --standalone --nproc_per_node=2 benchmarks/sharded_bank.py --device cpu --rows 0 --rebuild-rows 100000 1000000
    torchrun --standalone --nproc_per_node=8 benchmarks/sharded_bank.py --device cuda --rows 1281167 10000000
"""

from __future__ import annotations

import argparse
import datetime
import gc
import time

import torch
import torch.distributed as dist
from torch import Tensor, nn

from common import (
    EMBEDDING_DIM,
    N_BACKGROUND,
    N_POSITIVES,
    NUM_NEIGHBORS,
    STEPS,
    TEMPERATURE,
    fmt,
    machine,
    peak_mib,
    reset_peak,
    synchronize,
)
from invprop.core.bank import BANK_DTYPES, MemoryBank
from invprop.core.faiss_search import faiss_available
from invprop.distributed.partition import RowPartition
from invprop.engine.process_group import device_for, init_distributed, shutdown
from invprop.methods import Batch, BuildContext
from invprop.methods.memory_bank.invp import InvariancePropagation, InvPSettings
from invprop.models.encoder import Encoder

#: Clusters of the synthetic rows of the rebuild benchmark (real embeddings are clustered, not uniform on the sphere).
REBUILD_CLUSTERS = 1000
#: Rows on which graph recall is measured.
RECALL_SAMPLE = 2000


class _Passthrough(nn.Module):
    """Stands in for the encoder: the "images" are the embeddings, so only the objective and the bank are timed."""

    feature_dim = EMBEDDING_DIM

    def forward(self, x: Tensor) -> Tensor:
        return x


def partition(mode: str, n: int) -> RowPartition:
    if not dist.is_initialized():
        return RowPartition.whole(n)
    return RowPartition.split(n) if mode == "sharded" else RowPartition.replicated(n)


def step_time(
    mode: str, n: int, batch: int, device: torch.device, dtype: torch.dtype, repeats: int
) -> tuple[float, float, float | None]:
    """Median seconds of one step, the bank's MiB per process, and the peak device MiB (CUDA)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    generator = torch.Generator().manual_seed(0)
    neighbors = torch.randint(0, n, (n, NUM_NEIGHBORS), generator=generator)  # a valid graph from the first step
    torch.manual_seed(0)
    reset_peak(device)
    settings = InvPSettings()
    settings.bank.num_neighbors, settings.bank.placement = NUM_NEIGHBORS, mode
    settings.bank.dtype = next(name for name, value in BANK_DTYPES.items() if value == dtype)
    loss = settings.loss
    loss.temperature, loss.n_background, loss.steps, loss.n_hard_positives = (
        TEMPERATURE,
        N_BACKGROUND,
        STEPS,
        N_POSITIVES,
    )
    context = BuildContext(n, EMBEDDING_DIM, distributed=dist.is_initialized())
    method = InvariancePropagation(settings, Encoder(_Passthrough(), nn.Identity()), context).to(device)
    method.bank.neighbors.copy_(neighbors)
    bank = method.bank
    del neighbors
    per_process = batch // world
    times = []
    for repeat in range(repeats + 1):
        order = torch.randperm(n, generator=generator)[:batch]
        indices = order[rank * per_process : (rank + 1) * per_process].to(device)
        embeddings = torch.randn(per_process, EMBEDDING_DIM, generator=generator).to(device).requires_grad_()
        barrier_all(device)
        start = time.perf_counter()
        out = method.training_step(Batch.of(indices, embeddings, epoch=100))
        out.loss.backward()
        method.after_step([out])
        barrier_all(device)
        if repeat:  # the first step warms up
            times.append(time.perf_counter() - start)
    bank_mib = (bank.features.numel() * bank.features.element_size() + bank.neighbors.numel() * 8) / 2**20
    peak = peak_mib(device)
    del method, bank
    gc.collect()
    return sorted(times)[len(times) // 2], bank_mib, peak


def barrier_all(device: torch.device) -> None:
    synchronize(device)
    if dist.is_initialized():
        dist.barrier()


def clustered_rows(n: int, generator: torch.Generator) -> Tensor:
    centres = torch.randn(REBUILD_CLUSTERS, EMBEDDING_DIM, generator=generator)
    rows = centres[torch.randint(0, REBUILD_CLUSTERS, (n,), generator=generator)]
    return rows.add_(0.6 * torch.randn(n, EMBEDDING_DIM, generator=generator))


def rebuild(
    n: int, device: torch.device, exact_max: int, lists: int | None, probe: int, data: str
) -> dict[str, float | None]:
    """Seconds of an exact and of a FAISS rebuild (split bank), and the FAISS graph's sampled recall."""
    generator = torch.Generator().manual_seed(1)
    features = (
        clustered_rows(n, generator) if data == "clustered" else torch.randn(n, EMBEDDING_DIM, generator=generator)
    )
    bank = MemoryBank(n, EMBEDDING_DIM, 0.5, NUM_NEIGHBORS, device=device, features=features,
                      neighbors=torch.zeros(n, NUM_NEIGHBORS, dtype=torch.long), partition=partition("sharded", n))  # fmt: skip
    del features
    sample = torch.randperm(n, generator=generator)[:RECALL_SAMPLE]
    result: dict[str, float | None] = {"exact_s": None, "faiss_s": None, "recall": None}
    if n <= exact_max:
        barrier_all(device)
        start = time.perf_counter()
        bank.rebuild_neighbors(search="exact")
        barrier_all(device)
        result["exact_s"] = time.perf_counter() - start
    if faiss_available():
        barrier_all(device)
        start = time.perf_counter()
        bank.rebuild_neighbors(search="faiss", faiss_lists=lists, faiss_probe=probe)
        barrier_all(device)
        result["faiss_s"] = time.perf_counter() - start
        result["recall"] = bank.sampled_recall(sample)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="bank sizes N (0 = skip part 1)"
    )
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--dtype", choices=sorted(BANK_DTYPES), default="float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rebuild-rows", type=int, nargs="*", default=[], help="bank sizes of the rebuild benchmark")
    parser.add_argument("--exact-max", type=int, default=200_000, help="largest N rebuilt exactly too")
    parser.add_argument("--faiss-lists", type=int, default=None)
    parser.add_argument("--faiss-probe", type=int, default=32)
    parser.add_argument(
        "--rebuild-data",
        choices=["clustered", "uniform"],
        default="clustered",
        help="rows of the rebuild benchmark: clustered (1000 Gaussian clusters) or uniform on the sphere",
    )
    args = parser.parse_args()
    context = init_distributed(args.device)
    name = device_for(context, args.device)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    main_process = context.is_main
    if main_process:
        print(f"# sharded vs replicated bank, {context.world_size} processes, {datetime.date.today()}, {machine()}")
        print(
            f"# global batch {args.batch}, D={EMBEDDING_DIM}, N_b={N_BACKGROUND}, P={N_POSITIVES}, l={STEPS}, bank {args.dtype}"
        )
    rows = [n for n in args.rows if n > 0]
    if rows and main_process:
        print(
            "\n| N | replicated step (s) | sharded step (s) | sharded / replicated | bank per process, replicated -> sharded (MiB) | peak device MiB, replicated -> sharded |"
        )
        print("|---|---|---|---|---|---|")
    for n in rows:
        replicated = step_time("replicated", n, args.batch, device, BANK_DTYPES[args.dtype], args.repeats)
        sharded = step_time("sharded", n, args.batch, device, BANK_DTYPES[args.dtype], args.repeats)
        if main_process:
            peaks = f"{fmt(replicated[2])} -> {fmt(sharded[2])}" if replicated[2] is not None else "n/a (CPU)"
            print(f"| {n:,} | {replicated[0]:.3f} | {sharded[0]:.3f} | {sharded[0] / replicated[0]:.2f}x | "
                  f"{replicated[1]:,.0f} -> {sharded[1]:,.0f} | {peaks} |", flush=True)  # fmt: skip
    if args.rebuild_rows and main_process:
        print(
            f"\n# rebuild: {args.rebuild_data} rows, FAISS probe {args.faiss_probe}, lists {args.faiss_lists or '4 sqrt(N / W)'}"
        )
        print(
            f"\n| N | exact rebuild (s) | FAISS rebuild (s) | FAISS / exact | FAISS recall@{NUM_NEIGHBORS} ({RECALL_SAMPLE} rows) |"
        )
        print("|---|---|---|---|---|")
    for n in args.rebuild_rows:
        r = rebuild(n, device, args.exact_max, args.faiss_lists, args.faiss_probe, args.rebuild_data)
        if main_process:
            ratio = f"{r['faiss_s'] / r['exact_s']:.3f}x" if r["exact_s"] and r["faiss_s"] else "-"
            exact = f"{r['exact_s']:.1f}" if r["exact_s"] is not None else f"skipped (N > {args.exact_max:,})"
            faiss = f"{r['faiss_s']:.1f}" if r["faiss_s"] is not None else "faiss not installed"
            recall = f"{r['recall']:.3f}" if r["recall"] is not None else "-"
            print(f"| {n:,} | {exact} | {faiss} | {ratio} | {recall} |", flush=True)
    shutdown(context)


if __name__ == "__main__":
    main()
