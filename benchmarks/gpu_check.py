"""The GPU check: every CUDA path and every GPU figure of docs/benchmarks.md from one prepared command.

    python benchmarks/gpu_check.py --out DIR [--budget SECONDS] [--data TARBALL_OR_FOLDER] [--commit HASH]
    python benchmarks/gpu_check.py --smoke --out DIR     # the same steps on the CPU with tiny sizes (under a minute)

The steps, in order; each is skipped with a note when the budget left is smaller than it needs, and a step that
fails is reported and does not stop the others:

1. environment: GPU, driver, CUDA, torch and torchvision, the project's dependencies, the commit;
2. the CUDA tests (``pytest -m gpu``);
3. objective benchmark (benchmarks 1 and 3): N = 50k and 1.28M, B = 128 and 256, ratio to the authors'
   formulation and peak memory;
4. throughput (benchmark 2): fast path vs the fp32 + per-image CPU-augmentation baseline, InvP vs a plain
   cross-entropy step, with and without torch.compile;
5. logging a step's terms (benchmark 6): every term copied to the host at every step vs sums kept on the device;
6. one measured CIFAR-10 InvP epoch (benchmark 4);
7. a CIFAR-10 InvP training run whose epoch count is chosen from step 6's epoch time so that it ends within the
   budget, with held-out kNN top-1.

``gpu-check.md`` (tables to paste into docs/benchmarks.md and docs/results.md) and ``gpu-check.json`` (every figure)
are rewritten under ``--out`` after every step, so a run cut short still reports what it measured. Data is
extracted and cached under ``--work`` (a temporary folder by default), never under ``--out``. The exit status is 1
when a step failed, else 0. ``--smoke`` builds a tiny synthetic CIFAR-shaped tarball instead of reading CIFAR-10.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cifar_epoch import epoch_config, measure_epoch
from common import markdown_table, pick_device
from invprop.config import from_dict
from invprop.engine import Trainer
from invprop.files import write_text_atomically
from objective_step import COLUMNS as OBJECTIVE_COLUMNS
from objective_step import objective_rows, table_row
from term_logging import COLUMNS as LOGGING_COLUMNS
from term_logging import logging_rows
from throughput import PLAIN, default_workers, measure_throughput, summary

REPO = Path(__file__).resolve().parents[1]
#: Where the CIFAR-10 tarball is looked for when --data is not given: beside the checkout, then in the ignored
#: folder that is carried to the GPU machine (docs/benchmarks.md, "The GPU check").
DATA_CANDIDATES = (
    REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
    REPO / ".device-data" / "cifar10-jpeg.tar.gz",
)
#: Default budget: one 10-minute device command with margin for the start-up and the copy back.
DEFAULT_BUDGET_S = 420
#: Seconds kept back at the end for writing the report.
REPORT_RESERVE_S = 10
REPORT_MD = "gpu-check.md"
REPORT_JSON = "gpu-check.json"
TESTS_LOG = "gpu-tests.log"
TESTS_XML = "gpu-tests.xml"
#: The training run's share of the epoch count spent with the invariance term off (binary ramp-up): the authors'
#: 30 epochs of their 200-epoch ablation schedule.
RAMPUP_SHARE = 0.15
#: kNN evaluations during the training run (the last epoch is always evaluated).
RUN_EVALUATIONS = 4
#: The authors' learning rate at their batch of 128; scaled linearly with the batch (Goyal et al., 2017).
BASE_LR, BASE_BATCH = 0.03, 128


@dataclass(frozen=True)
class Plan:
    """Sizes of every step; ``min_s`` is the budget a step needs left to start."""

    objective_sizes: tuple[int, ...] = (50_000, 1_281_167)
    objective_batches: tuple[int, ...] = (128, 256)
    objective_repeats: int = 10
    throughput_steps: int = 50
    throughput_warmup: int = 5
    logging_methods: tuple[str, ...] = ("invp", "simclr", "vicreg")
    logging_steps: int = 200
    batch: int = 256
    compile: bool = True
    test_timeout_s: int = 240
    max_run_epochs: int = 200
    min_s: dict[str, float] = field(
        default_factory=lambda: {
            "tests": 60,
            "objective": 45,
            "throughput": 40,
            "compile": 90,
            "logging": 30,
            "epoch": 30,
            "run": 60,
        }
    )


#: ``--smoke``: the same steps, tiny (a 96-image synthetic training set, batch 32, a few steps, no torch.compile: it
#: takes about a minute on a CPU and has its own test).
SMOKE = Plan(
    objective_sizes=(5_000,),
    objective_batches=(32,),
    objective_repeats=1,
    throughput_steps=2,
    throughput_warmup=1,
    logging_methods=("invp",),
    logging_steps=4,
    batch=32,
    compile=False,
    test_timeout_s=120,
    max_run_epochs=2,
    min_s={"tests": 5, "objective": 2, "throughput": 5, "compile": 60, "logging": 3, "epoch": 3, "run": 3},
)


class Budget:
    """Seconds left of ``total``, counted from construction."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.start = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total - self.used()


class Report:
    """Every step's status and figures; rewrites gpu-check.md and gpu-check.json under ``out`` on each change."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.data: dict[str, Any] = {
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date": datetime.date.today().isoformat(),
            "smoke": args.smoke,
            "budget_s": args.budget,
            "steps": {},
        }
        self.sections: dict[str, str] = {}

    def record(
        self, step: str, status: str, seconds: float, note: str = "", figures: Any = None, text: str = ""
    ) -> None:
        self.data["steps"][step] = {"status": status, "seconds": round(seconds, 2), "note": note, "figures": figures}
        self.sections[step] = text
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        # Atomic: the command may be killed at its time limit while a report is being rewritten.
        write_text_atomically(self.out / REPORT_JSON, json.dumps(self.data, indent=2, default=str) + "\n")
        env = self.data["steps"].get("environment", {}).get("figures") or {}
        lines = [
            "# GPU check",
            "",
            f"Command: `{self.data['command']}`  ",
            f"Machine: {env.get('machine', 'not read yet')}  ",
            f"Date: {self.data['date']}; commit {env.get('commit', '?')}; budget {self.data['budget_s']} s"
            + ("; **smoke run (CPU, tiny sizes): no figure here is a GPU figure**" if self.data["smoke"] else ""),
            "",
        ]
        for step, title in STEP_TITLES.items():
            entry = self.data["steps"].get(step)
            lines.append(f"## {title}")
            lines.append("")
            if entry is None:
                lines += ["not reached", ""]
                continue
            head = f"**{entry['status']}** in {entry['seconds']:.1f} s"
            lines += [head + (f": {entry['note']}" if entry["note"] else ""), ""]
            if self.sections.get(step):
                lines += [self.sections[step].rstrip("\n"), ""]
        write_text_atomically(self.out / REPORT_MD, "\n".join(lines))


STEP_TITLES = {
    "environment": "1. Environment",
    "tests": "2. CUDA tests (pytest -m gpu)",
    "objective": "3. Objective step vs the authors' formulation (benchmarks 1 and 3)",
    "throughput": "4. Training throughput and InvP's overhead (benchmark 2)",
    "logging": "5. Logging a step's terms: host copies every step vs device sums (benchmark 6)",
    "epoch": "6. One CIFAR-10 InvP epoch (benchmark 4)",
    "run": "7. CIFAR-10 InvP training run within the budget",
}


# ------------------------------------------------------------------------------------------------ steps
def _command(args: list[str], timeout: float = 30) -> str | None:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def environment(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    cuda = torch.cuda.is_available()
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "commit": args.commit or _command(["git", "rev-parse", "HEAD"]) or "unknown (no .git; pass --commit)",
        "dirty": bool(_command(["git", "status", "--porcelain", "--untracked-files=no"])),
    }
    facts["packages"] = {}
    for name in (
        "torchvision",
        "numpy",
        "scikit-learn",
        "pyyaml",
        "tqdm",
        "pillow",
        "safetensors",
        "matplotlib",
        "pytest",
        "faiss-cpu",
    ):
        try:
            facts["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            facts["packages"][name] = None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = props.name
        facts["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        facts["gpu_multiprocessors"] = props.multi_processor_count
        facts["driver"] = _command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        facts["machine"] = (
            f"{props.name} ({facts['gpu_memory_gib']} GiB), driver {facts['driver']}, CUDA {torch.version.cuda}"
        )
    else:
        facts["machine"] = f"no GPU; {facts['cpu_cores']} CPU cores ({facts['cpu']})"
    facts["machine"] += (
        f"; torch {torch.__version__}, torchvision {facts['packages']['torchvision']}, Python {facts['python']}"
    )
    rows = [[key, str(value)] for key, value in facts.items() if key != "packages"]
    rows += [[f"package {name}", str(version)] for name, version in facts["packages"].items()]
    return facts, markdown_table(("fact", "value"), rows)


def cuda_tests(plan: Plan, budget: Budget, out: Path) -> tuple[dict[str, Any], str, str]:
    timeout = max(5.0, min(plan.test_timeout_s, budget.left() - REPORT_RESERVE_S))
    junit = out / TESTS_XML
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:  # (its captured output comes as bytes, whatever text=True says)
        captured = "".join(_text(part) for part in (err.stdout, err.stderr))
        output, code = f"{captured}\n[timed out after {timeout:.0f} s]", -1
    write_text_atomically(out / TESTS_LOG, output)
    outcomes = junit_outcomes(junit) if junit.is_file() else []
    counts: dict[str, int] = {}
    for _, outcome, _ in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    figures = {
        "exit_code": code,
        "counts": counts,
        "tests": [{"test": t, "outcome": o, "message": m} for t, o, m in outcomes],
    }
    table = (
        markdown_table(("test", "outcome", "message"), [[t, o, m[:120]] for t, o, m in outcomes]) if outcomes else ""
    )
    summary_line = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no test ran"
    # Exit code 5: no test ran (every case deselected); skips without CUDA are not failures either.
    status = "ok" if code in (0, 5) else "failed"
    return {**figures, "status": status}, table, f"{summary_line} (pytest exit code {code}); full log in {TESTS_LOG}"


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    return output.decode(errors="replace") if isinstance(output, bytes) else output


def junit_outcomes(path: Path) -> list[tuple[str, str, str]]:
    """``(test id, passed | failed | error | skipped, message)`` of every test case of a JUnit XML report."""
    import xml.etree.ElementTree as ElementTree

    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".replace(
            ".", "/", case.get("classname", "").count(".")
        )
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            child = case.find(kind)
            if child is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (child.get("message") or "").splitlines()[0] if child.get("message") else ""
                break
        cases.append((name, outcome, message))
    return cases


def objective(plan: Plan, device: torch.device) -> tuple[list[dict[str, Any]], str]:
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # both formulations in true fp32, as benchmark 1
    try:
        rows = objective_rows(device, list(plan.objective_sizes), list(plan.objective_batches), plan.objective_repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return rows, markdown_table(OBJECTIVE_COLUMNS, [table_row(row) for row in rows])


def throughput(plan: Plan, device: torch.device, data: Path, cache: Path, budget: Budget) -> tuple[dict[str, Any], str]:
    workers = default_workers()
    sizes = (plan.throughput_steps, plan.throughput_warmup, workers)
    results = measure_throughput(data, device, *sizes, variants=PLAIN, cache_dir=cache, batch=plan.batch)
    # torch.compile costs a minute or more of compilation: only when steps 5 and 6 keep their share of the budget.
    later = plan.min_s["epoch"] + plan.min_s["run"] + REPORT_RESERVE_S
    compile_note = ""
    if plan.compile and budget.left() - later >= plan.min_s["compile"]:
        compiled = ("fast+compile", "ce+compile")
        results.update(measure_throughput(data, device, *sizes, variants=compiled, cache_dir=cache, batch=plan.batch))
    elif plan.compile:
        compile_note = f"torch.compile variants skipped: {budget.left():.0f} s left, they need about {plan.min_s['compile']:.0f} s. "
    else:
        compile_note = "torch.compile variants not run in --smoke (compiling takes about a minute on a CPU). "
    ratios = summary(results)
    rows = [[label, f"{seconds:.4f}", f"{plan.batch / seconds:,.0f}"] for label, seconds in results.items()]
    text = markdown_table(("variant", "s/step", "images/s"), rows)
    text += f"\nbatch {plan.batch}, {plan.throughput_steps} timed steps after {plan.throughput_warmup}; baseline workers {workers}\n\n"
    text += compile_note + f"Fast / baseline throughput: **{ratios['fast_over_baseline']:.2f}x**. "
    text += f"InvP overhead (fast / ce): **{ratios['invp_overhead']:.3f}**"
    if "compiled_invp_overhead" in ratios:
        text += (f". With torch.compile: fast / baseline **{ratios['compiled_fast_over_baseline']:.2f}x**, "
                 f"InvP overhead **{ratios['compiled_invp_overhead']:.3f}**")  # fmt: skip
    return {"seconds_per_step": results, **ratios, "batch": plan.batch, "workers": workers}, text + ".\n"


def term_logging(plan: Plan, device: torch.device) -> tuple[list[list[str]], str]:
    rows = logging_rows(list(plan.logging_methods), device, plan.logging_steps, min(50, plan.logging_steps))
    return rows, markdown_table(LOGGING_COLUMNS, rows)


def one_epoch(plan: Plan, device: torch.device, data: Path, cache: Path) -> tuple[dict[str, Any], str]:
    cfg = epoch_config(data, str(device), False, "tensor", default_workers(), plan.batch, cache)
    result = measure_epoch(cfg)
    text = markdown_table(
        ("device", "precision", "batch", "steps", "epoch s", "images/s"),
        [[result["device"], result["precision"], str(plan.batch), str(result["steps_per_epoch"]),
          f"{result['epoch_seconds']:.2f}", f"{result['images_per_s']:,.0f}"]],
    )  # fmt: skip
    return result, text


def run_settings(plan: Plan, epochs: int) -> dict[str, Any]:
    """The training run's overrides of the cifar10 preset for ``epochs`` epochs."""
    return {
        "epochs": epochs,
        "loss": {"rampup_epochs": max(1, round(RAMPUP_SHARE * epochs))},
        "optim": {"lr": BASE_LR * plan.batch / BASE_BATCH},
        "eval": {"every": max(1, epochs // RUN_EVALUATIONS)},
    }


def training_run(
    plan: Plan, device: torch.device, data: Path, cache: Path, epoch_s: float, budget: Budget
) -> tuple[dict[str, Any], str]:
    # Each epoch costs its training time plus its share of the kNN evaluations; keep back two epochs for setting up
    # (data from the cache, the raw-pixel baseline) and the report.
    per_epoch = epoch_s * 1.15
    room = budget.left() - REPORT_RESERVE_S - 2 * per_epoch
    epochs = int(min(plan.max_run_epochs, room // per_epoch))
    if epochs < 1:
        raise _Skip(f"{budget.left():.0f} s left, an epoch takes about {per_epoch:.1f} s")
    base = epoch_config(data, str(device), False, "tensor", default_workers(), plan.batch, cache)
    settings = run_settings(plan, epochs)
    cfg = from_dict(settings, base=base)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        result = Trainer(cfg, Path(run_dir), progress=False).fit()
        wall = time.perf_counter() - start
        history = [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
    metrics = result.metrics
    curve = [(r["epoch"], r["seconds"], r["knn_top1"]) for r in history if "knn_top1" in r]
    figures = {"epochs": epochs, "settings": settings, "wall_s": wall, "metrics": metrics, "curve": curve}
    text = markdown_table(
        ("epoch", "training s", "held-out kNN top-1"), [[str(e), f"{s:.1f}", f"{a:.4f}"] for e, s, a in curve]
    )
    text += (
        f"\n{epochs} epochs of the cifar10 preset (ResNet-18, CIFAR stem) at batch {plan.batch}, lr {settings['optim']['lr']:g}, "
        f"binary ramp-up {settings['loss']['rampup_epochs']} epochs, cosine schedule; {wall:.0f} s wall, "
        f"{metrics['seconds']:.0f} s of training and monitoring. Held-out kNN top-1 **{metrics['knn_top1']:.4f} after "
        f"{metrics['seconds'] / 60:.1f} min** (raw pixels {metrics.get('baseline_raw_knn_top1', float('nan')):.4f}).\n"
    )
    return figures, text


class _Skip(Exception):
    """A step decided it cannot run in the budget left."""


# ------------------------------------------------------------------------------------------------ data
def synthetic_tarball(path: Path, classes: int = 4, train_per_class: int = 24, test_per_class: int = 8) -> Path:
    """A CIFAR-shaped tarball (``train/<class>/*.jpg``, ``test/<class>/*.jpg``, 32x32 RGB) of class-tinted noise."""
    from PIL import Image

    generator = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            for c in range(classes):
                target = Path(folder) / split / f"class{c}"
                target.mkdir(parents=True)
                tint = np.array([60 * c % 256, 255 - 60 * c % 256, 40 * c % 256], dtype=np.float64)
                for i in range(count):
                    pixels = np.clip(tint + generator.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(target / f"{i:04d}.jpg", quality=90)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            for split in ("train", "test"):
                tar.add(Path(folder) / split, arcname=split)
    return path


def prepare_data(source: Path, work: Path) -> Path:
    """An extracted ImageFolder copy (``train/``, ``test/``) of ``source`` (a tarball or such a folder)."""
    if source.is_dir():
        return source
    target = work / "cifar10"
    if not (target / "train").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        with tarfile.open(source) as tar:
            tar.extractall(target, filter="data")
    return target


def find_data(given: str | None) -> Path | None:
    if given:
        return Path(given).expanduser()
    return next((p for p in DATA_CANDIDATES if p.exists()), None)


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu-check.md, gpu-check.json and the test log")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help=f"seconds for the whole check (default {DEFAULT_BUDGET_S}; 60 with --smoke)",
    )
    parser.add_argument("--data", default=None, help="CIFAR-10 tarball or extracted folder (default: the first of "
                        + ", ".join(str(p) for p in DATA_CANDIDATES) + " that exists)")  # fmt: skip
    parser.add_argument("--work", default=None, help="folder for extracted data and caches (default: a temporary one)")
    parser.add_argument("--commit", default=None, help="the commit checked (default: git rev-parse HEAD)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, tiny sizes, synthetic data: checks the script itself"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated steps to leave out (" + ", ".join(STEP_TITLES) + ")"
    )
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(STEP_TITLES)
    if unknown:
        parser.error(f"unknown step(s) in --skip: {', '.join(sorted(unknown))}; choose from {', '.join(STEP_TITLES)}")
    args.budget = args.budget if args.budget is not None else (60.0 if args.smoke else DEFAULT_BUDGET_S)
    budget = Budget(args.budget)
    plan = SMOKE if args.smoke else Plan()
    device = torch.device("cpu") if args.smoke else pick_device(args.device)
    out = Path(args.out)
    report = Report(out, args)
    work_context = tempfile.TemporaryDirectory(prefix="gpu-check-") if args.work is None else None
    work = Path(args.work) if args.work else Path(work_context.name)  # type: ignore[union-attr]
    cache = work / "cache"
    failed = False
    state: dict[str, Any] = {}

    def data() -> Path:
        if "data" not in state:
            source = synthetic_tarball(work / "synthetic-cifar.tar.gz") if args.smoke else find_data(args.data)
            if source is None or not source.exists():
                raise _Skip(
                    "no CIFAR-10 data: pass --data or copy cifar10-jpeg.tar.gz into .device-data/ (docs/benchmarks.md)"
                )
            state["data"] = prepare_data(source, work)
        return state["data"]

    steps: list[tuple[str, Callable[[], tuple[Any, str, str]]]] = [
        ("environment", lambda: (*environment(args), "")),
        ("tests", lambda: cuda_tests(plan, budget, out)),
        ("objective", lambda: (*objective(plan, device), "")),
        ("throughput", lambda: (*throughput(plan, device, data(), cache, budget), "")),
        ("logging", lambda: (*term_logging(plan, device), "")),
        ("epoch", lambda: (*one_epoch(plan, device, data(), cache), "")),
        ("run", lambda: (*training_run(plan, device, data(), cache, _epoch_seconds(report), budget), "")),
    ]
    try:
        for name, step in steps:
            needed = plan.min_s.get(name, 0)
            if name in skip:
                report.record(name, "skipped", 0, "left out with --skip")
                continue
            if budget.left() - REPORT_RESERVE_S < needed:
                report.record(
                    name,
                    "skipped",
                    0,
                    f"{budget.left():.0f} s of the budget left; this step needs about {needed:.0f} s",
                )
                continue
            start = time.perf_counter()
            try:
                figures, text, note = step()
                status = figures.pop("status", "ok") if isinstance(figures, dict) else "ok"
            except _Skip as why:
                report.record(name, "skipped", time.perf_counter() - start, str(why))
                continue
            except Exception as err:  # noqa: BLE001 - report it and go on with the next step
                failed = True
                trace = traceback.format_exc()
                report.record(
                    name,
                    "failed",
                    time.perf_counter() - start,
                    f"{type(err).__name__}: {err}",
                    text=f"```\n{trace}```\n",
                )
                print(trace, file=sys.stderr, flush=True)
                continue
            failed |= status == "failed"
            report.record(name, status, time.perf_counter() - start, note, figures, text)
            print(
                f"gpu_check: {name} {status} ({time.perf_counter() - start:.1f} s, {budget.left():.0f} s left)",
                flush=True,
            )
    finally:
        if work_context is not None:
            work_context.cleanup()
    print(f"gpu_check: report in {out / REPORT_MD} ({budget.used():.0f} s)", flush=True)
    return 1 if failed else 0


def _epoch_seconds(report: Report) -> float:
    epoch = report.data["steps"].get("epoch", {})
    if epoch.get("status") != "ok":
        raise _Skip("needs the epoch time of step 6, which did not run")
    return float(epoch["figures"]["epoch_seconds"])


if __name__ == "__main__":
    sys.exit(main())
