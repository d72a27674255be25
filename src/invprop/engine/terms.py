"""The epoch's logged terms, summed where they are computed: on the training device, copied to the host (and, in a
distributed run, all-reduced) only at sync points -- every ``log.every_steps`` steps and at the epoch's end -- so a
GPU step never waits for the host. The loss is checked for non-finite values on the device as well; a sync reports
the first step that had one.

The engine knows no term by name: whatever a method's step reports (0-d tensors or floats) is summed, counted
(NaN values, a diagnostic undefined on a batch, are left out of their means) and averaged. Sums run in float64, in
step order, so a run's means do not depend on when it synced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from invprop.distributed.collectives import all_reduce_sum
from invprop.engine.process_group import DistributedContext

#: The key of the loss among the terms.
LOSS = "loss"


@dataclass(frozen=True)
class NonFinite:
    """The first step of the epoch (counting from 1) whose loss was not finite, and that loss."""

    step: int
    value: float


class TermSums:
    """Running sums and counts of one epoch's logged terms.

    Args:
        device: where the sums of tensor terms live (the training device).
        first_step: the step the epoch (re)starts from (counting from 0; a resumed epoch's saved step).
        saved: a resumed epoch's sums and counts (:meth:`state`).
        holds_saved: this process starts from ``saved`` (the main process of a run); the others start from zero, so
            that the all-reduce counts the saved sums once.
    """

    def __init__(
        self,
        device: torch.device,
        first_step: int = 0,
        saved: Mapping[str, Any] | None = None,
        holds_saved: bool = True,
    ) -> None:
        self.device = device
        self.keys: list[str] = []
        self._sums = torch.zeros(0, dtype=torch.float64, device=device)
        self._counts = torch.zeros(0, dtype=torch.float64, device=device)
        self._host_sums: dict[str, float] = {}
        self._host_counts: dict[str, float] = {}
        self._step = torch.tensor(first_step, dtype=torch.long, device=device)
        self._bad_step = torch.tensor(-1, dtype=torch.long, device=device)
        self._bad_value = torch.zeros((), dtype=torch.float64, device=device)
        self._nan: Tensor | None = None
        self.count = int(saved["count"]) if saved else 0  # steps added, over the epoch
        if saved:  # every process lays the keys out in the same order; only the holder starts from the sums
            sums, counts = saved["sums"], saved.get("counts") or {}
            on_host = set(saved.get("host") or ())
            self._grow([k for k in sums if k not in on_host])
            share = 1.0 if holds_saved else 0.0
            self._sums = torch.tensor([share * float(sums[k]) for k in self.keys], dtype=torch.float64, device=device)
            self._counts = torch.tensor(
                [share * float(counts.get(k, self.count)) for k in self.keys], dtype=torch.float64, device=device
            )
            for key in sorted(on_host):
                self._host_sums[key] = share * float(sums[key])
                self._host_counts[key] = share * float(counts.get(key, self.count))
        #: The last synced means, sums and counts (:meth:`sync`).
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def _grow(self, keys: list[str]) -> None:
        new = [k for k in keys if k not in self.keys]
        if new:
            self.keys += new
            pad = torch.zeros(len(new), dtype=torch.float64, device=self.device)
            self._sums = torch.cat([self._sums, pad])
            self._counts = torch.cat([self._counts, pad])

    def add(self, loss: Tensor, terms: Mapping[str, Tensor | float]) -> None:
        """Add one step's loss and terms (no host copy of tensors: their sums stay on the device)."""
        tensors = {LOSS: loss.detach(), **{k: v.detach() for k, v in terms.items() if isinstance(v, Tensor)}}
        self._grow(list(tensors))
        missing = self._missing()
        values = torch.stack([tensors[k].reshape(()).to(torch.float64) if k in tensors else missing
                              for k in self.keys])  # fmt: skip
        present = ~torch.isnan(values)  # a missing term counts as NaN: left out
        self._sums = self._sums + torch.where(present, values, torch.zeros_like(values))
        self._counts = self._counts + present.to(torch.float64)
        for key, value in terms.items():
            if not isinstance(value, Tensor) and value == value:
                self._host_sums[key] = self._host_sums.get(key, 0.0) + float(value)
                self._host_counts[key] = self._host_counts.get(key, 0.0) + 1.0
        self._step += 1
        bad = ~torch.isfinite(loss.detach()) & (self._bad_step < 0)
        self._bad_step = torch.where(bad, self._step, self._bad_step)
        self._bad_value = torch.where(bad, loss.detach().to(torch.float64), self._bad_value)
        self.count += 1

    def _missing(self) -> Tensor:
        if self._nan is None:
            self._nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.device)
        return self._nan

    def sync(self, context: DistributedContext, stop: bool = False) -> tuple[bool, NonFinite | None]:
        """Copy the sums to the host (:attr:`sums`, :attr:`counts`; summed over the processes of a distributed run,
        with the stop votes). Returns whether any process asked to stop, and this process's first non-finite loss of
        the epoch (None if none). Every process of a run must call it at the same steps."""
        packed = torch.cat([
            self._sums, self._counts, torch.tensor([float(stop)], dtype=torch.float64, device=self.device)
        ])  # fmt: skip
        bad = torch.stack([self._bad_step.to(torch.float64), self._bad_value])
        if context.enabled:
            packed = all_reduce_sum(packed.clone())
        n = len(self.keys)
        host = packed.cpu().tolist()
        bad_step, bad_value = bad.cpu().tolist()
        sums = dict(zip(self.keys, host[:n], strict=True))
        counts = dict(zip(self.keys, host[n : 2 * n], strict=True))
        host_floats = {k: [self._host_sums[k], self._host_counts[k]] for k in self._host_sums}
        if context.enabled and host_floats:  # (rare: float terms; the keys are the same on every process)
            keys = sorted(host_floats)
            reduced = all_reduce_sum(torch.tensor([host_floats[k] for k in keys], dtype=torch.float64,
                                                  device=self.device)).cpu().tolist()  # fmt: skip
            host_floats = dict(zip(keys, reduced, strict=True))
        for key, (total, count) in host_floats.items():
            sums[key], counts[key] = total, count
        self.sums, self.counts = sums, counts
        failed = NonFinite(int(bad_step), bad_value) if bad_step >= 0 else None
        return bool(host[2 * n] > 0), failed

    def means(self) -> dict[str, float]:
        """The epoch's mean of every term at the last sync (terms no step gave a value are left out)."""
        return {key: total / self.counts[key] for key, total in self.sums.items() if self.counts[key]}

    def state(self) -> dict[str, Any]:
        """The synced sums and counts, to save with an interrupted epoch (the run's, over every process), and which
        terms are summed on the host (those a method reports as floats)."""
        return {
            "sums": dict(self.sums),
            "counts": dict(self.counts),
            "count": self.count,
            "host": sorted(self._host_sums),
        }


__all__ = ["LOSS", "NonFinite", "TermSums"]
