"""The epoch's logged terms: summed on the device in step order, copied to the host only at a sync, averaged
without NaN values, checked for a non-finite loss, saved and continued exactly, and averaged over processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gloo import run_gloo
from invprop.engine.process_group import SINGLE_PROCESS, DistributedContext
from invprop.engine.terms import TermSums

CPU = torch.device("cpu")


def _steps(n: int, seed: int = 0) -> list[tuple[torch.Tensor, dict[str, torch.Tensor | float]]]:
    """``n`` steps of float32 terms; ``purity`` undefined (NaN) on every third step; ``momentum`` a float."""
    g = torch.Generator().manual_seed(seed)
    steps = []
    for i in range(n):
        loss = torch.rand((), generator=g) * 5
        purity = torch.tensor(float("nan")) if i % 3 == 0 else torch.rand((), generator=g)
        steps.append((loss, {"loss_a": loss / 3, "purity": purity, "momentum": 0.99 + i / 1000}))
    return steps


def _oracle(steps: list[tuple[torch.Tensor, dict[str, torch.Tensor | float]]]) -> dict[str, float]:
    """The means written out: Python floats summed step by step, NaN values left out of sum and count."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for loss, terms in steps:
        for key, value in {"loss": loss, **terms}.items():
            number = float(value)
            if not math.isnan(number):
                sums[key] = sums.get(key, 0.0) + number
                counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def test_means_equal_the_sums_written_out_per_step_to_the_last_bit() -> None:
    steps = _steps(10)
    terms = TermSums(CPU)
    for loss, values in steps:
        terms.add(loss, values)
    stop, failed = terms.sync(SINGLE_PROCESS)
    assert not stop and failed is None
    assert terms.means() == _oracle(steps)  # exact: float64 sums in step order
    assert terms.counts["purity"] == 6 and terms.counts["loss"] == 10


def test_adding_a_step_copies_nothing_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    terms = TermSums(CPU)
    terms.add(*_steps(1)[0])  # the first step lays out the keys

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a host copy during a step")

    for name in ("item", "tolist", "cpu", "__float__", "__bool__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for loss, values in _steps(5, seed=1):
        terms.add(loss, values)
    monkeypatch.undo()
    terms.sync(SINGLE_PROCESS)
    assert terms.counts["loss"] == 6


def test_a_term_that_a_step_does_not_report_is_left_out_of_its_mean() -> None:
    terms = TermSums(CPU)
    terms.add(torch.tensor(1.0), {"a": torch.tensor(2.0)})
    terms.add(torch.tensor(3.0), {"b": torch.tensor(4.0)})
    terms.add(torch.tensor(5.0), {"a": torch.tensor(6.0), "b": torch.tensor(float("nan"))})
    terms.sync(SINGLE_PROCESS)
    assert terms.means() == {"loss": 3.0, "a": 4.0, "b": 4.0}


def test_the_first_non_finite_loss_is_reported_with_its_step() -> None:
    terms = TermSums(CPU, first_step=4)
    values = [1.0, float("inf"), float("nan"), 2.0]
    for value in values:
        terms.add(torch.tensor(value), {})
    _, failed = terms.sync(SINGLE_PROCESS)
    assert failed is not None and failed.step == 6 and failed.value == float("inf")  # steps 5, 6, ... from 1


def test_an_interrupted_epoch_continues_its_sums_exactly() -> None:
    steps = _steps(9)
    first = TermSums(CPU)
    for loss, values in steps[:4]:
        first.add(loss, values)
    first.sync(SINGLE_PROCESS)
    resumed = TermSums(CPU, first_step=4, saved=first.state())
    for loss, values in steps[4:]:
        resumed.add(loss, values)
    resumed.sync(SINGLE_PROCESS)
    assert resumed.means() == _oracle(steps) and resumed.state()["count"] == 9


def _two_processes(rank: int, world: int) -> tuple[dict[str, float], dict[str, float], bool, bool]:
    context = DistributedContext(rank, world)
    saved = {"sums": {"loss": 10.0, "purity": 1.0}, "counts": {"loss": 2, "purity": 2}, "count": 1}
    terms = TermSums(CPU, 1, saved, holds_saved=context.is_main)  # the saved sums are the run's: counted once
    terms.add(torch.tensor(1.0 + rank), {"purity": torch.tensor(float("nan") if rank == 0 else 0.5)})
    first_stop, _ = terms.sync(context, stop=False)
    terms.add(torch.tensor(3.0), {"purity": torch.tensor(0.25)})
    second_stop, _ = terms.sync(context, stop=rank == 1)
    return terms.means(), terms.counts, first_stop, second_stop


def test_two_processes_average_over_both_and_agree_to_stop(tmp_path: Path) -> None:
    for means, counts, first_stop, second_stop in run_gloo(_two_processes, 2, tmp_path):
        assert counts["loss"] == 6 and means["loss"] == (10.0 + 1.0 + 2.0 + 3.0 + 3.0) / 6
        assert counts["purity"] == 5 and means["purity"] == (1.0 + 0.5 + 0.25 + 0.25) / 5
        assert not first_stop and second_stop


def _orders(rank: int, world: int) -> tuple[dict[str, float], bool]:
    """Two processes reporting the same terms in different orders, one float term NaN at first on process 0."""
    context = DistributedContext(rank, world)
    terms = TermSums(CPU)
    values = {"a": torch.tensor(1.0 + rank), "b": torch.tensor(100.0), "m": float("nan") if rank == 0 else 0.5}
    keys = ["a", "b", "m"] if rank == 0 else ["m", "b", "a"]
    terms.add(torch.tensor(3.0), {k: values[k] for k in keys})
    terms.add(torch.tensor(3.0), {"b": torch.tensor(100.0), "a": torch.tensor(1.0 + rank), "m": 0.5})
    _, failed = terms.sync(context)
    return terms.means(), failed is None


def test_processes_reporting_terms_in_different_orders_sum_each_term_with_itself(tmp_path: Path) -> None:
    for means, finite in run_gloo(_orders, 2, tmp_path):
        assert finite and means == {"loss": 3.0, "a": 1.5, "b": 100.0, "m": 0.5}


def _one_diverges(rank: int, world: int) -> tuple[int, bool, float]:
    context = DistributedContext(rank, world)
    terms = TermSums(CPU)
    for step in range(3):
        terms.add(torch.tensor(float("nan") if rank == 1 and step == 1 else 1.0), {})
    _, failed = terms.sync(context)
    assert failed is not None
    return failed.step, failed.elsewhere, failed.value


def test_a_non_finite_loss_on_one_process_stops_every_process_at_the_same_sync(tmp_path: Path) -> None:
    (step0, elsewhere0, _), (step1, elsewhere1, value1) = run_gloo(_one_diverges, 2, tmp_path)
    assert (step1, elsewhere1) == (2, False) and value1 != value1  # its own: step 2, NaN
    assert (step0, elsewhere0) == (3, True)  # the other's, reported at the sync after step 3
