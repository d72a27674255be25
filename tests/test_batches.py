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
    with pytest.raises(DataError, match="no image of a training batch could be read"):
        list(BatchPipeline(data, batch_size=4, device=CPU).epoch(seed=0))
