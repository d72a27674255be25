"""Benchmark 1 (and 3, memory): one InvP objective step, invprop's fast path vs the authors' dense formulation.

A step is forward + backward of Eq. 7 w.r.t. the embeddings + neighbour refresh of the batch rows + EMA bank update,
on the same random bank, neighbour table and embeddings for both. Prints a Markdown table with the median step time
of each, their ratio, and the peak device memory of each on CUDA.

    python benchmarks/objective_step.py --device cpu --sizes 50000 --batches 128 256
    python benchmarks/objective_step.py --device cuda --sizes 50000 1281167 --batches 128 256
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any, Callable

import torch

from authors_reference import authors_step
from common import (
    EMBEDDING_DIM,
    MOMENTUM,
    N_BACKGROUND,
    N_POSITIVES,
    NUM_NEIGHBORS,
    STEPS,
    TEMPERATURE,
    WEIGHT,
    fmt,
    machine,
    markdown_table,
    peak_mib,
    pick_device,
    reset_peak,
    time_call,
)
from invprop.core import InvariancePropagationLoss, MemoryBank
from invprop.core.bank import BANK_DTYPES


def make_inputs(
    n: int, b: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(n, EMBEDDING_DIM, generator=gen), dim=1)
    neighbors = torch.randint(0, n, (n, NUM_NEIGHBORS), generator=gen)
    indices = torch.randperm(n, generator=gen)[:b]
    embeddings = features[indices] + 0.5 * torch.randn(b, EMBEDDING_DIM, generator=gen)
    return features.to(device), neighbors.to(device), indices.to(device), embeddings.to(device)


def invprop_runner(features, neighbors, indices, embeddings, bank_dtype: torch.dtype, exact: bool, similarity: str):
    n = features.shape[0]
    bank = MemoryBank(
        n,
        EMBEDDING_DIM,
        MOMENTUM,
        NUM_NEIGHBORS,
        device=features.device,
        dtype=bank_dtype,
        features=features,
        neighbors=neighbors,
    )
    objective = InvariancePropagationLoss(
        TEMPERATURE, N_BACKGROUND, STEPS, N_POSITIVES, exact=exact, similarity=similarity
    )

    def step() -> None:
        emb = embeddings.clone().requires_grad_()
        out = objective(emb, indices, bank)
        (out.instance + WEIGHT * out.invariance).backward()
        bank.refresh_neighbors(indices, emb.detach(), candidates=out.background)
        bank.update(indices, emb.detach())

    return step


def reference_runner(features, neighbors, indices, embeddings):
    bank, table = features.clone(), neighbors.clone()

    def step() -> None:
        emb = embeddings.clone().requires_grad_()
        authors_step(emb, indices, bank, table, TEMPERATURE, N_BACKGROUND, STEPS, N_POSITIVES, WEIGHT, MOMENTUM)

    return step


def measure(make, device: torch.device, repeats: int, warmup: int = 2) -> tuple[float, float | None]:
    reset_peak(device)
    step = make()
    seconds = time_call(step, device, repeats, warmup)
    peak = peak_mib(device)
    del step
    return seconds, peak


def variants(bank_dtype: str) -> dict[str, tuple[torch.dtype, bool, str]]:
    """invprop's variants: name -> (bank dtype, exact positives, similarity strategy)."""
    return {
        "invprop, concatenation (authors' positives), auto": (torch.float32, False, "auto"),
        "invprop, exact positives, auto": (torch.float32, True, "auto"),
        "invprop, exact, dense similarity": (torch.float32, True, "dense"),
        "invprop, exact, gathered similarity": (torch.float32, True, "gather"),
        f"invprop, exact, auto, {bank_dtype} bank": (BANK_DTYPES[bank_dtype], True, "auto"),
    }


def objective_rows(
    device: torch.device,
    sizes: list[int],
    batches: list[int],
    repeats: int,
    bank_dtype: str = "float16",
    warmup: int = 2,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (N, B, variant): median step time in ms, its ratio to the reference's, peak device MiB (CUDA)."""
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    def one_size(n: int, b: int) -> None:  # the inputs are freed when it returns
        inputs = make_inputs(n, b, device)
        ref_s, ref_m = measure(lambda: reference_runner(*inputs), device, repeats, warmup)
        add(
            {
                "N": n,
                "B": b,
                "variant": "reference (authors' formulation)",
                "ms": ref_s * 1e3,
                "ratio": 1.0,
                "peak_mib": ref_m,
            }
        )
        for name, (dtype, exact, strategy) in variants(bank_dtype).items():
            sec, mem = measure(lambda: invprop_runner(*inputs, dtype, exact, strategy), device, repeats, warmup)
            add({"N": n, "B": b, "variant": name, "ms": sec * 1e3, "ratio": sec / ref_s, "peak_mib": mem})

    for n in sizes:
        for b in batches:
            one_size(n, b)
    return rows


COLUMNS = ("N", "B", "variant", "step ms", "vs reference", "peak MiB")


def table_row(row: dict[str, Any]) -> list[str]:
    return [
        f"{row['N']:,}",
        str(row["B"]),
        row["variant"],
        f"{row['ms']:.1f}",
        f"{row['ratio']:.2f}x",
        fmt(row["peak_mib"], "{:.0f}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--bank-dtype", default="float16", choices=sorted(BANK_DTYPES), help="extra invprop row")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # both sides in true fp32
    print(f"# objective step, {machine()}, {datetime.date.today()}, device {device}")
    print(
        f"# D={EMBEDDING_DIM} k={NUM_NEIGHBORS} l={STEPS} N_b={N_BACKGROUND} P={N_POSITIVES}; median of {args.repeats}"
    )
    print(markdown_table(COLUMNS, []), end="")
    objective_rows(
        device, args.sizes, args.batches, args.repeats, args.bank_dtype,
        on_row=lambda row: print("| " + " | ".join(table_row(row)) + " |", flush=True),
    )  # fmt: skip


if __name__ == "__main__":
    main()
