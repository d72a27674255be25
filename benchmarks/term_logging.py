"""Benchmark 6: what logging a step's terms costs, before and after the terms stayed on the device.

Before (the loop up to 547e08f): at every step each logged term was copied to the host (``float(t)``: a device
synchronisation each; InvP logs 8) and the loss tested for finiteness on the host. After
(:class:`invprop.engine.terms.TermSums`): the terms are summed on the device, in float64, and copied once per
``log.every_steps`` steps (50 by default) with the finiteness test's result. Both variants wrap the same real
training steps of a method on digits (``training_step``, backward, the optimiser step, ``after_step``), timed in
alternating blocks so that a drift of the machine hits both alike. Prints a Markdown table of the median seconds per
step of each variant and their ratio.

    python benchmarks/term_logging.py --device cpu --methods invp simclr vicreg --steps 400
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from common import machine, markdown_table, pick_device, synchronize
from invprop.config import from_dict, preset
from invprop.engine import Trainer
from invprop.engine.process_group import SINGLE_PROCESS
from invprop.engine.terms import TermSums
from invprop.methods import Batch, StepOutput

#: The interval of the "after" variant (the default of ``log.every_steps``).
EVERY = 50


def _batches(trainer: Trainer, count: int) -> list[Batch]:
    """``count`` training batches on the device, made before timing (data loading is not what is measured)."""
    out: list[Batch] = []
    epoch = 0
    while len(out) < count:
        epoch += 1
        for indices, images in trainer.batches.epoch(epoch):
            groups = tuple(images if isinstance(images, list) else [images])
            out.append(Batch(indices, groups, epoch=100, step=len(out)))
    return out[:count]


def _step(trainer: Trainer, batch: Batch) -> StepOutput:
    method, optimizer = trainer.method, trainer.optimizer
    out = method.training_step(batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    method.before_optimizer_step()
    optimizer.step()
    method.after_step([out])
    return out


def per_step_copies(trainer: Trainer) -> Callable[[Batch, int], None]:
    """The logging of the loop before: every term to the host at every step."""
    sums: dict[str, float] = {}

    def log(batch: Batch, index: int) -> None:
        out = _step(trainer, batch)
        loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise RuntimeError("non-finite loss")
        for key, value in {"loss": loss, **{k: float(v) for k, v in out.terms.items()}}.items():
            if value == value:
                sums[key] = sums.get(key, 0.0) + value

    return log


def device_sums(trainer: Trainer) -> Callable[[Batch, int], None]:
    """The logging now: sums on the device, one copy every :data:`EVERY` steps."""
    terms = TermSums(trainer.device)

    def log(batch: Batch, index: int) -> None:
        out = _step(trainer, batch)
        terms.add(out.loss, out.terms)
        if (index + 1) % EVERY == 0:
            terms.sync(SINGLE_PROCESS)

    return log


def measure(name: str, device: torch.device, steps: int, block: int) -> tuple[float, float, int]:
    """Median seconds per step of the two variants, and the terms a step of ``name`` logs."""
    cfg = from_dict({"method": name, "epochs": 1000, "device": str(device)}, base=preset("digits", name))
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(cfg, Path(folder) / "run", progress=False)
        trainer.method.train()
        batches = _batches(trainer, block)
        logged = len(trainer.method.training_step(batches[0]).terms) + 1
        variants = {"before": per_step_copies(trainer), "after": device_sums(trainer)}
        times: dict[str, list[float]] = {key: [] for key in variants}
        for _ in range(2):  # warm-up
            for log in variants.values():
                log(batches[0], 0)
        for repeat in range(max(1, steps // (2 * block))):
            for key, log in variants.items():
                synchronize(device)
                start = time.perf_counter()
                for index, batch in enumerate(batches):
                    log(batch, repeat * block + index)
                synchronize(device)
                times[key].append((time.perf_counter() - start) / len(batches))
    return statistics.median(times["before"]), statistics.median(times["after"]), logged


COLUMNS = ("method", "values logged per step", "before: ms/step", "after: ms/step", "before / after")


def logging_rows(methods: list[str], device: torch.device, steps: int, block: int) -> list[list[str]]:
    """One table row per method (:data:`COLUMNS`)."""
    rows = []
    for name in methods:
        before, after, logged = measure(name, device, steps, block)
        rows.append([name, str(logged), f"{1000 * before:.2f}", f"{1000 * after:.2f}", f"{before / after:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", nargs="+", default=["invp", "simclr", "vicreg"])
    parser.add_argument("--steps", type=int, default=400, help="timed steps per variant and method")
    parser.add_argument("--block", type=int, default=EVERY, help="steps per timed block (variants alternate)")
    args = parser.parse_args()
    rows = logging_rows(args.methods, pick_device(args.device), args.steps, args.block)
    print(f"{machine()}, {datetime.date.today().isoformat()}, {args.steps} steps per variant, blocks of {args.block}\n")
    print(markdown_table(COLUMNS, rows), end="")


if __name__ == "__main__":
    main()
