"""The training batches of a run when image files change under it (issue 34): a file removed or damaged during
per-image training is skipped and counted, or stops the run with one line under --strict-data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from digit_folder import write_digit_folder
from invprop.data import DataSplits, build_datasets
from invprop.data.image_sequences import ImageFiles
from invprop.engine.batches import BatchPipeline
from invprop.errors import DataError

CPU = torch.device("cpu")


def _per_image_folder(tmp_path: Path, count: int = 12) -> tuple[DataSplits, list[Path]]:
    write_digit_folder(tmp_path / "images", count, side=8)
    data = build_datasets(f"imagefolder:{tmp_path / 'images'}", image_size=8, pipeline="per_image")
    assert isinstance(data.train.source, ImageFiles)
    return data, data.train.source.files


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_removed_during_training_is_skipped_and_counted(
    tmp_path: Path, workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    data, files = _per_image_folder(tmp_path)
    pipeline = BatchPipeline(data, batch_size=4, device=CPU, views=2, num_workers=workers)
    before = [indices.tolist() for indices, _ in pipeline.epoch(seed=3)]
    gone = before[1][2]
    files[gone].unlink()
    after = [(indices.tolist(), images.shape[0]) for indices, images in pipeline.epoch(seed=3)]
    assert [indices for indices, _ in after] == [[i for i in batch if i != gone] for batch in before]
    assert all(count == 2 * len(indices) for indices, count in after)  # two views of each image still there
    assert pipeline.unreadable == {str(files[gone]): "No such file or directory"}
    assert f"{files[gone]} could not be read during training (No such file or directory)" in caplog.text
    list(pipeline.epoch(seed=4))
    assert len(pipeline.unreadable) == 1 and caplog.text.count("could not be read during training") == 1


def test_strict_data_stops_with_one_line_naming_the_file(tmp_path: Path) -> None:
    data, files = _per_image_folder(tmp_path)
    files[5].write_bytes(files[5].read_bytes()[:40])  # truncated while the run trains
    pipeline = BatchPipeline(data, batch_size=4, device=CPU, strict=True)
    pattern = rf"^{re.escape(str(files[5]))} could not be read during training \(.+\): the folder changed while"
    with pytest.raises(DataError, match=pattern + r".*drop --strict-data to skip it$"):
        list(pipeline.epoch(seed=0))


def test_a_batch_of_which_nothing_can_be_read_stops_the_run(tmp_path: Path) -> None:
    data, files = _per_image_folder(tmp_path, count=8)
    for path in files:
        path.unlink()
    with pytest.raises(DataError, match=r"^0 image\(s\) of a training batch of 4 could be read .* too few to train"):
        list(BatchPipeline(data, batch_size=4, device=CPU).epoch(seed=0))


def test_an_image_read_by_index_that_is_gone_is_one_line_even_from_a_worker(tmp_path: Path) -> None:
    """Evaluation and embedding read the training files by index (the kNN monitor's reference set, DeepCluster's
    features): a file gone since the listing is a one-line error, also when a DataLoader worker met it."""
    from torch.utils.data import DataLoader

    from invprop.cli import words

    data, files = _per_image_folder(tmp_path)
    files[3].unlink()
    expected = f"{files[3]} could not be read (No such file or directory): the folder changed since it was listed"
    with pytest.raises(DataError, match=f"^{re.escape(expected)}"):
        data.train_plain[3]
    with pytest.raises(DataError) as raised:
        list(DataLoader(data.train_plain, batch_size=4, num_workers=1))
    assert words(raised.value).startswith(expected) and "\n" not in words(raised.value)


def test_how_a_worker_ended_is_said_for_any_signal_and_bus_errors_name_shared_memory() -> None:
    from invprop.data.loader import _how_it_ended, worker_lost

    assert _how_it_ended(-9) == "was killed by signal SIGKILL" and _how_it_ended(-40) == "was killed by signal 40"
    assert _how_it_ended(1) == "exited with code 1"
    bus = worker_lost(RuntimeError("DataLoader worker (pid 7) is killed by signal: Bus error. It is possible..."))
    assert bus is not None and "(pid 7) was killed by signal Bus error, most often too little shared memory" in str(bus)
    assert worker_lost(RuntimeError("DataLoader worker (pid(s) 7, 8) exited unexpectedly")) is not None
    assert worker_lost(RuntimeError("CUDA out of memory")) is None and worker_lost(ValueError("pid 7")) is None
