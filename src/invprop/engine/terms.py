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
    """A non-finite loss: the first step of the epoch (counting from 1) that had one on this process, and its value;
    or, when it was another process's (``elsewhere``), the step of the sync that reported it."""

    step: int
    value: float
    elsewhere: bool = False


class TermSums:
    """Running sums and counts of one epoch's logged terms.

    Tensor terms are summed on the device in a layout sorted by name, the same on every process whatever order a
    step reports them in; float terms on the host. A step that does not report a term, or reports NaN, leaves it out
    of that term's mean. Every process of a run must report the same terms (a method's contract).

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
        #: The device sums' layout (sorted names) and every term in the order a step first reported it.
        self.layout: list[str] = []
        self.order: list[str] = []
        self._sums = torch.zeros(0, dtype=torch.float64, device=device)
        self._counts = torch.zeros(0, dtype=torch.float64, device=device)
        self._host_sums: dict[str, float] = {}
        self._host_counts: dict[str, float] = {}
        self._step = torch.tensor(first_step, dtype=torch.long, device=device)
        self._bad_step = torch.tensor(-1, dtype=torch.long, device=device)
        self._bad_value = torch.zeros((), dtype=torch.float64, device=device)
        self._nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
        self.count = int(saved["count"]) if saved else 0  # steps added, over the epoch
        if saved:  # every process lays the keys out alike; only the holder starts from the sums
            sums, counts = saved["sums"], saved.get("counts") or {}
            on_host = set(saved.get("host") or ())
            self.order = list(sums)
            self._grow([k for k in sums if k not in on_host])
            share = 1.0 if holds_saved else 0.0
            self._sums = torch.tensor([share * float(sums[k]) for k in self.layout], dtype=torch.float64,
                                      device=device)  # fmt: skip
            self._counts = torch.tensor(
                [share * float(counts.get(k, self.count)) for k in self.layout], dtype=torch.float64, device=device
            )
            for key in sorted(on_host):
                self._host_sums[key] = share * float(sums[key])
                self._host_counts[key] = share * float(counts.get(key, self.count))
        #: The last synced sums and counts (:meth:`sync`), over every process.
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def _grow(self, keys: list[str]) -> None:
        """Add ``keys`` to the sorted layout, moving the sums (rare: the first step, or a term new in the epoch)."""
        layout = sorted(set(self.layout) | set(keys))
        if layout == self.layout:
            return
        positions = torch.tensor([layout.index(k) for k in self.layout], dtype=torch.long, device=self.device)
        sums = torch.zeros(len(layout), dtype=torch.float64, device=self.device)
        counts = torch.zeros(len(layout), dtype=torch.float64, device=self.device)
        self._sums = sums.index_copy(0, positions, self._sums)
        self._counts = counts.index_copy(0, positions, self._counts)
        self.layout = layout

    def add(self, loss: Tensor, terms: Mapping[str, Tensor | float]) -> None:
        """Add one step's loss and terms (no host copy of tensors: their sums stay on the device)."""
        tensors = {LOSS: loss.detach(), **{k: v.detach() for k, v in terms.items() if isinstance(v, Tensor)}}
        for key in (LOSS, *terms):
            if key not in self.order:
                self.order.append(key)
        if not set(tensors) <= set(self.layout):
            self._grow(list(tensors))
        values = torch.stack([tensors[k].reshape(()).to(torch.float64) if k in tensors else self._nan
                              for k in self.layout])  # fmt: skip
        present = ~torch.isnan(values)  # a missing term counts as NaN: left out
        self._sums = self._sums + torch.where(present, values, torch.zeros_like(values))
        self._counts = self._counts + present.to(torch.float64)
        for key, value in terms.items():
            if not isinstance(value, Tensor):
                number = float(value)
                self._host_sums.setdefault(key, 0.0)
                self._host_counts.setdefault(key, 0.0)
                if number == number:
                    self._host_sums[key] += number
                    self._host_counts[key] += 1.0
        self._step += 1
        bad = ~torch.isfinite(loss.detach()) & (self._bad_step < 0)
        self._bad_step = torch.where(bad, self._step, self._bad_step)
        self._bad_value = torch.where(bad, loss.detach().to(torch.float64), self._bad_value)
        self.count += 1

    def sync(self, context: DistributedContext, stop: bool = False) -> tuple[bool, NonFinite | None]:
        """Copy the sums to the host (:attr:`sums`, :attr:`counts`; summed over the processes of a distributed run,
        with the stop votes and whether any process had a non-finite loss: one all-reduce). Returns whether any
        process asked to stop, and the epoch's first non-finite loss (this process's, or another's). Every process
        of a run must call it at the same steps."""
        flags = torch.stack([torch.tensor(float(stop), dtype=torch.float64, device=self.device),
                             (self._bad_step >= 0).to(torch.float64)])  # fmt: skip
        packed = torch.cat([self._sums, self._counts, flags])
        if context.enabled:
            packed = all_reduce_sum(packed.clone())
        n = len(self.layout)
        host = packed.cpu().tolist()
        bad_step, bad_value, step = (float(x) for x in torch.stack(
            [self._bad_step.to(torch.float64), self._bad_value, self._step.to(torch.float64)]).cpu().tolist())  # fmt: skip
        sums = dict(zip(self.layout, host[:n], strict=True))
        counts = dict(zip(self.layout, host[n : 2 * n], strict=True))
        keys = sorted(self._host_sums)
        floats = [value for key in keys for value in (self._host_sums[key], self._host_counts[key])]
        if context.enabled and floats:  # (float terms: the same keys on every process)
            floats = all_reduce_sum(torch.tensor(floats, dtype=torch.float64, device=self.device)).cpu().tolist()
        for i, key in enumerate(keys):  # (a resumed epoch of an earlier version held float terms on the device)
            sums[key] = sums.get(key, 0.0) + floats[2 * i]
            counts[key] = counts.get(key, 0.0) + floats[2 * i + 1]
        self.sums = {key: sums[key] for key in self.order if key in sums}
        self.counts = {key: counts[key] for key in self.order if key in counts}
        failed = None
        if bad_step >= 0:
            failed = NonFinite(int(bad_step), bad_value)
        elif host[2 * n + 1] > 0:
            failed = NonFinite(int(step), float("nan"), elsewhere=True)
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
