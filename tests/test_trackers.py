"""Experiment trackers (``log.tracker``): TensorBoard through a stand-in writer, MLflow with a real file store and
W&B in real offline mode; what each receives is checked against the run's own files."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

from invprop.cli import main
from invprop.config import Config
from invprop.evaluation.report_trackers import send_figures
from invprop.trackers import TRACKER_RECORD, TRACKERS, TrackerRecord
from invprop.trackers.base import flat_config, scalars

TRAIN = ["-q", "train", "--set", "loss.rampup_epochs=1", "--set", "optim.batch_size=64"]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err.strip()


def _history(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def _figures(report: Path) -> list[str]:
    return sorted(p.name for p in report.glob("*.png"))


def test_log_tracker_takes_its_choices_from_the_registry(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import dataclasses

    from invprop.config.schema import LogSettings

    field = {f.name: f for f in dataclasses.fields(LogSettings)}["tracker"]
    assert field.metadata["choices"] is TRACKERS
    assert set(TRACKERS) == {"mlflow", "none", "tensorboard", "wandb"}
    assert Config().log.tracker == "tensorboard"
    code, err = _run([*TRAIN, "--set", "log.tracker=wandbb", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "(did you mean wandb?)" in err


def test_scalars_and_flat_config() -> None:
    assert scalars({"epoch": 3, "loss": 1, "knn_top1": 0.5, "stage": "a", "collapsed": True}) == {
        "loss": 1.0,
        "knn_top1": 0.5,
    }
    assert flat_config({"a": 1, "optim": {"lr": 0.1, "inner": {"x": "y"}}}) == {
        "a": 1,
        "optim.lr": 0.1,
        "optim.inner.x": "y",
    }


@pytest.mark.parametrize(("tracker", "package"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_tracker_package_is_one_line_naming_its_extra_before_any_training(
    tracker: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if it were not installed
    run = tmp_path / "run"
    code, err = _run([*TRAIN, "--epochs", "1", "--set", f"log.tracker={tracker}", "--out", str(run)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"needs the {package} package: pip install 'invprop[{tracker}]'" in err
    assert not (run / "history.jsonl").exists() and not (run / "last.pt").exists()


class _Writer:
    """A stand-in for TensorBoard's SummaryWriter that keeps what it is given."""

    calls: list[tuple[str, Any, ...]] = []

    def __init__(self, log_dir: str) -> None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)

    def add_scalar(self, key: str, value: float, step: int) -> None:
        self.calls.append(("scalar", key, value, step))

    def add_image(self, key: str, pixels: Any, dataformats: str) -> None:
        self.calls.append(("image", key, pixels.shape, dataformats))

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _stand_in_tensorboard(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _Writer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(_Writer, "calls", [])


def _pngs(folder: Path, count: int = 2) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"figure-{i}.png" for i in range(count)]
    for i, path in enumerate(paths):
        Image.new("RGB", (8 + i, 6), (i * 40, 0, 0)).save(path)
    return paths


def test_tensorboard_gets_every_epochs_numbers_and_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stand_in_tensorboard(monkeypatch)
    run = tmp_path / "run"
    assert _run([*TRAIN, "--epochs", "2", "--out", str(run)], capsys)[0] == 0
    expected = [
        ("scalar", key, float(value), line["epoch"])
        for line in _history(run)
        for key, value in line.items()
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    assert [c for c in _Writer.calls if c[0] == "scalar"] == expected
    assert TrackerRecord.read(run) == TrackerRecord("tensorboard", "tensorboard", "invprop")
    assert send_figures([run, tmp_path / "untracked"], _pngs(tmp_path / "figures")) == [run]
    images = [c for c in _Writer.calls if c[0] == "image"]
    assert images == [("image", "report/figure-0", (6, 8, 3), "HWC"), ("image", "report/figure-1", (6, 9, 3), "HWC")]


@pytest.mark.slow
def test_invprop_report_sends_its_figures_to_the_runs_tracker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stand_in_tensorboard(monkeypatch)
    run = tmp_path / "run"
    assert _run([*TRAIN, "--epochs", "1", "--out", str(run)], capsys)[0] == 0
    report = tmp_path / "report"
    assert _run(["-q", "report", str(run), "--out", str(report)], capsys)[0] == 0
    images = [c[1] for c in _Writer.calls if c[0] == "image"]
    assert sorted(images) == [f"report/{Path(name).stem}" for name in _figures(report)] and images


def test_none_writes_the_runs_own_files_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _run([*TRAIN, "--epochs", "1", "--set", "log.tracker=none", "--out", str(run)], capsys)[0] == 0
    assert (run / "history.jsonl").is_file() and not (run / TRACKER_RECORD).exists()
    assert not (run / "tensorboard").exists()


@contextlib.contextmanager
def _file_store_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test's own MLflow reads, which MLflow 3 refuses from a file store unless asked."""
    with monkeypatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        yield


def test_mlflow_file_store_holds_the_history_settings_files_and_figures_across_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = (tmp_path / "store").as_uri()
    run = tmp_path / "run"
    tracked = [*TRAIN, "--epochs", "2", "--set", "log.tracker=mlflow", "--set", f"log.tracker_uri={store}"]
    assert _run([*tracked, "--stop-after", "1", "--out", str(run)], capsys)[0] == 0
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # asked for invprop's own calls only
    first = TrackerRecord.read(run)
    assert first is not None and first.tracker == "mlflow" and first.uri == store
    assert send_figures([run], _pngs(tmp_path / "figures")) == [run]  # a report adds figures, status untouched
    with _file_store_reads(monkeypatch):
        assert MlflowClient(store).get_run(first.run_id).info.status == "KILLED"  # stopped, to be resumed
    assert _run([*tracked, "--resume", "--out", str(run)], capsys)[0] == 0
    assert TrackerRecord.read(run) == first  # the same MLflow run goes on
    with _file_store_reads(monkeypatch):
        client = MlflowClient(store)
        mlflow_run = client.get_run(first.run_id)
        assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "run"
        assert mlflow_run.data.params["optim.batch_size"] == "64" and mlflow_run.data.params["method"] == "invp"
        lines = _history(run)
        for key in ("loss", "knn_top1"):
            logged = [(m.step, m.value) for m in client.get_metric_history(first.run_id, key)]
            assert logged == [(line["epoch"], line[key]) for line in lines if key in line], key
        assert {"metrics.json", "config.yaml"} <= {a.path for a in client.list_artifacts(first.run_id)}
        saved = Path(client.download_artifacts(first.run_id, "metrics.json", str(tmp_path)))
        assert json.loads(saved.read_text()) == json.loads((run / "metrics.json").read_text())
        sent = sorted(Path(a.path).name for a in client.list_artifacts(first.run_id, "report"))
        assert sent == ["figure-0.png", "figure-1.png"]


def test_wandb_offline_run_holds_the_history_and_files_and_a_resume_continues_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):  # nothing left outside the test's folder
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    request.addfinalizer(wandb.teardown)
    run = tmp_path / "run"
    tracked = [*TRAIN, "--epochs", "2", "--set", "log.tracker=wandb", "--set", "log.project=tests"]
    assert _run([*tracked, "--stop-after", "1", "--out", str(run)], capsys)[0] == 0
    record = TrackerRecord.read(run)
    assert record is not None and record.tracker == "wandb" and record.project == "tests"
    assert _run([*tracked, "--resume", "--out", str(run)], capsys)[0] == 0
    assert TrackerRecord.read(run) == record
    sittings = sorted((run / "wandb").glob(f"offline-run-*-{record.run_id}"))
    assert len(sittings) == 2  # one folder per sitting, one W&B run id: `wandb sync` joins them
    lines = _history(run)
    for sitting, line in zip(sittings, lines):
        events = next(sitting.glob("run-*.wandb")).read_bytes()
        assert b"loss" in events and json.dumps(line["loss"]).encode() in events, sitting
    last = sittings[-1]
    assert json.loads((last / "files" / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())
    assert (last / "files" / "config.yaml").read_text() == (run / "config.yaml").read_text()


def test_an_mlflow_store_given_as_a_plain_path_is_a_file_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invprop.trackers.mlflow_store import MlflowTracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert MlflowTracker(tmp_path / "run", "p", "stores/ml").store == (tmp_path / "stores" / "ml").as_uri()
    assert MlflowTracker(tmp_path / "run", "p").store == (tmp_path / "mlruns").as_uri()  # beside the run folder
    assert MlflowTracker(tmp_path / "run", "p", "http://host:5000").store == "http://host:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./env-store")
    assert MlflowTracker(tmp_path / "run", "p").store == (tmp_path / "env-store").as_uri()


def test_a_new_run_starts_a_new_tracker_run_even_where_an_old_record_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    from invprop.trackers.mlflow_store import MlflowTracker

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    store = (tmp_path / "store").as_uri()
    first = MlflowTracker(run, "p", store)
    first.start({"a": 1})
    first.close()
    old = TrackerRecord.read(run)
    second = MlflowTracker(run, "p", store)
    second.start({"a": 2})  # a new run in the folder (a failed start left the record): not the old tracker run
    second.close()
    new = TrackerRecord.read(run)
    assert old is not None and new is not None and new.run_id != old.run_id
    third = MlflowTracker(run, "p", store)
    third.start({}, resume=True)
    third.close()
    assert TrackerRecord.read(run) == new


def test_a_tracker_that_fails_mid_run_is_a_warning_and_the_run_finishes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("mlflow")
    from invprop.trackers.mlflow_store import MlflowTracker

    def unreachable(self: MlflowTracker, epoch: int, values: Any) -> None:
        raise ConnectionError("the tracking server is out of reach")

    monkeypatch.setattr(MlflowTracker, "log_epoch", unreachable)
    run = tmp_path / "run"
    args = [*TRAIN, "--epochs", "2", "--set", "log.tracker=mlflow", "--set",
            f"log.tracker_uri={(tmp_path / 'store').as_uri()}", "--out", str(run)]  # fmt: skip
    assert _run(args, capsys)[0] == 0
    assert [line["epoch"] for line in _history(run)] == [1, 2] and (run / "metrics.json").is_file()
    assert "the mlflow tracker failed (the tracking server is out of reach)" in caplog.text
