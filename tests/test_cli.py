from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from devices import CUDA_ONLY
from floors import untrained_knn_of
from invprop.cli import main


def run_cli(*args: str) -> int:
    return main(list(args))


def test_train_stop_resume_equals_uninterrupted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["-q", "train", "--epochs", "2", "--set", "loss.rampup_epochs=1"]
    assert run_cli(*common, "--out", str(tmp_path / "a")) == 0
    assert run_cli(*common, "--stop-after", "1", "--out", str(tmp_path / "b")) == 0
    assert "stopped after epoch 1 of 2" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["epochs"] == 1
    assert run_cli("-q", "train", "--epochs", "2", "--resume", "--out", str(tmp_path / "b")) == 0
    out = capsys.readouterr().out
    assert "held-out kNN" in out and "raw pixels" in out
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    for key in ("knn_top1", "knn_top5", "loss", "epochs", "baseline_raw_knn_top1"):
        assert a[key] == b[key], key
    assert run_cli("-q", "eval", "knn", "--checkpoint", str(tmp_path / "a" / "last.pt")) == 0
    assert f"knn_top1: {a['knn_top1']:.4f}" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["eval"][0]["protocol"] == "knn"


def exit_code(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as stop:  # argparse's own usage errors
        return int(stop.code)


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--dataset", "imagenett", "--out", "{out}"], "unknown dataset 'imagenett'"),
        (["train", "--set", "loss.temperature=-1", "--out", "{out}"], "loss.temperature must be positive"),
        (["train", "--set", "loss.temprature=0.2", "--out", "{out}"], "did you mean loss.temperature"),
        (["train", "--epochs", "0", "--out", "{out}"], "epochs must be at least 1"),
        (["train", "--config", "/nonexistent.yaml", "--out", "{out}"], "cannot read config file"),
        (["train", "--resume"], "--resume needs --out"),
        (["train", "--resume", "--out", "{out}"], "nothing to resume"),
        (
            ["train", "--dataset", "cifar100", "--set", "data.root=/nonexistent", "--set", "data.download=false"]
            + ["--out", "{out}"],
            "CIFAR-100 not found",
        ),
        (["eval", "knn", "--checkpoint", "/nonexistent/last.pt"], "does not exist"),
        (["train", "--epochs", "two"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert exit_code(*[a.format(out=out) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (out / "last.pt").exists()


def test_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("-q", "train", "--epochs", "1", "--out", str(tmp_path)) == 0
    before = (tmp_path / "last.pt").read_bytes()
    assert run_cli("-q", "train", "--epochs", "1", "--out", str(tmp_path)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "last.pt").read_bytes() == before


def test_presets_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("presets") == 0
    out = capsys.readouterr().out
    for name in ("digits (default)", "cifar10", "cifar100", "svhn", "imagenet"):
        assert name in out
    assert run_cli("presets", "imagenet") == 0
    assert "backbone: resnet50" in capsys.readouterr().out
    assert run_cli("presets", "--keys") == 0
    assert "loss.temperature" in capsys.readouterr().out


def test_console_entry_point_exit_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "invprop", "train", "--set", "bank.momentum=2"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "invprop: error: bank.momentum must be in [0, 1), got 2.0"


def test_several_set_flags_on_one_section_all_apply() -> None:
    from invprop.cli import _nested_overrides

    merged = _nested_overrides(["eval.knn_k=20", "eval.knn_sigma=0.1", "epochs=3"])
    assert merged == {"eval": {"knn_k": 20, "knn_sigma": 0.1}, "epochs": 3}


#: Seconds between torchrun's looks at its workers in the dead-peer test (its default is 0.1).
SURVIVOR_TIME = 20


def _torchrun(*args: str, processes: int = 2, quiet: bool = True, monitor_interval: float | None = None) -> list[str]:
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        *([f"--monitor-interval={monitor_interval}"] if monitor_interval is not None else []),
        "-m",
        "invprop",
    ]
    return [*launch, *(["-q"] if quiet else []), "train", *args]


@pytest.mark.parametrize("device,backend", [("cpu", "gloo"), pytest.param("cuda", "nccl", marks=CUDA_ONLY)])
def test_one_process_torchrun_joins_a_process_group_and_trains(device: str, backend: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--epochs", "1", "--out", str(run), "--set", f"device={device}", "--set", f"distributed.backend={backend}"]
    proc = subprocess.run(_torchrun(*args, processes=1, quiet=False), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"distributed: 1 processes, backend {backend}" in proc.stderr  # the group was joined, DDP ran over it
    assert "run finished" in proc.stdout
    assert json.loads((run / "metrics.json").read_text())["knn_top1"] > untrained_knn_of(run)


@pytest.mark.slow
def test_two_process_run_completes_and_resumes_with_other_process_counts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--set", "optim.batch_size=64", "--set", "loss.rampup_epochs=1", "--set", "device=cpu"]
    first = subprocess.run(_torchrun("--epochs", "3", "--stop-after", "1", "--out", str(run), *common),
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("run stopped after epoch 1 of 3") == 1  # only the main process reports
    assert len((run / "history.jsonl").read_text().splitlines()) == 1
    # Epoch 2 in a single process, epoch 3 in two processes with the bank split between them.
    assert main(["-q", "train", "--resume", "--stop-after", "2", "--out", str(run)]) == 0
    third = subprocess.run(_torchrun("--resume", "--out", str(run), "--set", "bank.placement=sharded"),
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert third.returncode == 0, third.stderr[-3000:]
    assert "run finished" in third.stdout
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["knn_top1"] > untrained_knn_of(run)
    # The instance term is comparable across epochs (the invariance term is off in epoch 1): it must not blow up.
    assert history[2]["loss_ins"] < history[0]["loss_ins"] + 1.0 and all(r["loss"] == r["loss"] for r in history)


def _worker_of_rank(run: Path, rank: int) -> int:
    """The pid of the torchrun worker process of ``rank`` training into ``run`` (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
            environment = (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(run).encode() in command and f"\0RANK={rank}\0".encode() in environment and b"invprop" in command:
            return int(proc.name)
    raise AssertionError(f"no worker of rank {rank} found")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="Linux: finds the worker in /proc")
def test_a_dead_torchrun_peer_is_named_in_one_line_by_the_survivor(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--epochs", "30", "--out", str(run), "--set", "optim.batch_size=64", "--set", "device=cpu"]
    # torchrun looks at its workers every 0.1 s by default and then SIGTERMs the survivors, which can come before the
    # survivor notices its dead peer (it then dies of that SIGTERM and torchrun's summary names the failed rank); a
    # slower look leaves the survivor time to say it itself, which is what is tested here.
    command = _torchrun(*args, monitor_interval=SURVIVOR_TIME)
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / "history.jsonl").is_file() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        victim = _worker_of_rank(run, 1)
        os.kill(victim, signal.SIGKILL)  # what the out-of-memory killer does
        _, err = job.communicate(timeout=300)
    finally:
        job.kill()
    survivor = [line for line in err.splitlines() if line.startswith("invprop: error:")]
    assert survivor == [
        f"invprop: error: process 0 of 2 stopped: process 1 (pid {victim}) of this torchrun job ended while they "
        "trained (its own output and torchrun's summary say why); run the same torchrun command with --resume to go "
        "on from the last checkpoint"
    ], err[-3000:]
    assert "gloo" not in err.lower().split("root cause")[0], err[-3000:]  # no gloo traceback before torchrun's summary
    assert main(["-q", "train", "--resume", "--epochs", "2", "--out", str(run)]) == 0


def test_a_config_file_for_several_methods_trains_one_of_them(tmp_path: Path) -> None:
    """A compare's config (InvP's loss, MoCo's queue) given to `train` for another method: each takes its sections."""
    config = tmp_path / "several.yaml"
    config.write_text("epochs: 1\nloss:\n  temperature: 0.2\nmoco:\n  queue_size: 256\noptim:\n  batch_size: 64\n")
    run = tmp_path / "run"
    assert main(["-q", "train", "--config", str(config), "--set", "method=simclr", "--out", str(run)]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["method"] == "simclr" and saved["optim"]["batch_size"] == 64 and "loss" not in saved
    # a --set names one key for the run's method: a section of another method is refused (a likely slip)
    assert (
        main(["-q", "train", "--set", "method=simclr", "--set", "moco.queue_size=256", "--out", str(tmp_path / "b")])
        == 2
    )


def test_only_train_runs_under_torchrun(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as info:
        main(["presets"])
    assert info.value.code == 2
    assert "only 'invprop train' runs under torchrun" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_instance_classifier_resumes_in_one_process(tmp_path: Path) -> None:
    from invprop.engine import load_checkpoint

    run = tmp_path / "run"
    common = ["--set", "method=instance-classifier", "--set", "optim.batch_size=64", "--set", "classifier.hard_classes=10",
              "--set", "device=cpu"]  # fmt: skip
    first = subprocess.run(_torchrun("--epochs", "2", "--stop-after", "1", "--out", str(run), *common),
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    state = load_checkpoint(run / "last.pt")
    # The split weight matrix, its hard classes and its momentum are checkpointed whole (1,347 rows).
    assert state["model"]["classifier.weight"].shape[0] == 1347 and state["model"]["classifier.hard"].shape == (
        1347,
        10,
    )
    momentum = [
        s["momentum_buffer"] for s in state["optimizer"]["state"].values() if s["momentum_buffer"].shape[0] == 1347
    ]
    assert len(momentum) == 1 and momentum[0].abs().sum() > 0
    assert main(["-q", "train", "--resume", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["knn_top1"] > untrained_knn_of(run)


def test_a_run_over_a_small_folder_says_the_background_cap_once_in_its_own_voice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import numpy as np
    from PIL import Image

    caplog.set_level(logging.INFO)
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    args = ["train", "--dataset", f"imagefolder:{tmp_path / 'images'}", "--epochs", "2", "--out", str(tmp_path / "run")]
    for setting in ("data.cache_dir=null", "data.image_size=12", "model.backbone=small_convnet", "optim.batch_size=8"):
        args += ["--set", setting]
    assert main(args) == 0
    # The log goes to pytest's handler when pytest captures it.
    said = capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    assert said.count("loss.n_background=4096 is more than the 24 training images") == 1
    assert "Warning" not in said and ".py:" not in said


def test_python_warnings_are_one_log_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import warnings

    import invprop.cli as cli

    def noisy(args: object) -> int:
        for _ in range(3):  # the same warning, from the same line: said once
            warnings.warn("something odd\nwith detail on a second line", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "cmd_presets", noisy)
    assert main(["presets"]) == 0
    assert [r.getMessage() for r in caplog.records] == ["warning: something odd"]
    assert "Warning" not in capsys.readouterr().err
