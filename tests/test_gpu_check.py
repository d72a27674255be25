"""benchmarks/gpu_check.py must not rot between GPU sessions: its --smoke run goes through every step on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
STEPS = ("environment", "tests", "objective", "throughput", "logging", "epoch", "run")


@pytest.mark.slow
def test_smoke_run_goes_through_every_step_and_reports_each(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        # A budget no step can run out of on a slow or busy machine: the smoke's sizes bound its time (about 30 s).
        [sys.executable, str(SCRIPT), "--smoke", "--budget", "900", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["smoke"] is True
    assert {name: report["steps"][name]["status"] for name in STEPS} == dict.fromkeys(STEPS, "ok")
    steps = report["steps"]
    # Every GPU test was collected (and skipped here: no CUDA), with its name in the report.
    gpu_tests = {case["test"].split("::")[-1].split("[")[0] for case in steps["tests"]["figures"]["tests"]}
    assert {"test_bf16_step_matches_the_fp32_step", "test_channels_last_gives_the_same_step",
            "test_one_process_torchrun_joins_a_process_group_and_trains", "test_objective_step_memory_at_imagenet_scale",
            "test_presets_keep_shape_and_are_deterministic_under_a_seed"} <= gpu_tests  # fmt: skip
    assert {row["variant"] for row in steps["objective"]["figures"]} >= {
        "reference (authors' formulation)",
        "invprop, exact positives, auto",
    }
    assert set(steps["throughput"]["figures"]["seconds_per_step"]) == {"fast", "baseline", "ce"}
    assert steps["epoch"]["figures"]["measured"] and steps["epoch"]["figures"]["epoch_seconds"] > 0
    run = steps["run"]["figures"]
    assert run["epochs"] >= 1 and 0 <= run["metrics"]["knn_top1"] <= 1 and len(run["curve"]) >= 1
    markdown = (out / "gpu-check.md").read_text()
    assert [row[0] for row in steps["logging"]["figures"]] == ["invp"]
    for title in ("1. Environment", "2. CUDA tests", "3. Objective step", "4. Training throughput", "5. Logging a step",
                  "6. One CIFAR-10", "7. CIFAR-10 InvP training run"):  # fmt: skip
        assert f"## {title}" in markdown
    assert "not reached" not in markdown and "**failed**" not in markdown
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "gpu-check.md", "gpu-tests.log", "gpu-tests.xml"]


def test_a_step_that_does_not_fit_the_budget_is_skipped_with_a_note(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--budget", "1", "--out", str(out), "--skip", "tests"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads((out / "gpu-check.json").read_text())["steps"]
    assert steps["tests"]["note"] == "left out with --skip"
    for name in ("objective", "throughput", "logging", "epoch", "run"):
        assert steps[name]["status"] == "skipped" and "of the budget left" in steps[name]["note"], name


def test_unknown_step_names_are_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--skip", "tset"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "unknown step(s) in --skip: tset" in proc.stderr


def test_runtime_dependencies_are_preinstalled_on_the_gpu_machine() -> None:
    """The GPU machine reaches no package registry: what the project needs must already be there (or be carried)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = SCRIPT.parents[1]
    listed: dict[str, str | None] = {}
    for line in (root / "benchmarks" / "device-packages.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition(" ")
            listed[canonicalize_name(name)] = version.strip() or None
    assert len(listed) > 100 and listed["torch"] == "2.11.0"
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    for text in [*project["dependencies"], "pytest"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in listed, f"{name} is not on the GPU machine: carry its wheel (docs/benchmarks.md, the GPU check)"
        if listed[name] is not None:
            assert requirement.specifier.contains(listed[name], prereleases=True), f"{name} {listed[name]} vs {text}"
