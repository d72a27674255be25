"""``eval dense``: mosaics set 2 x 2 image by image, each map location labelled by the quadrant holding its centre,
the mean IoU against its definition, and the protocol end to end on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from invprop.evaluation.dense import location_labels, mean_iou, quadrant_mosaics


def test_each_mosaic_holds_its_four_images_row_by_row() -> None:
    images, labels = torch.randn(9, 2, 3, 5), torch.arange(9)  # two mosaics; the ninth image is left over
    mosaics, quadrants = quadrant_mosaics(images, labels)
    assert mosaics.shape == (2, 2, 6, 10) and quadrants.tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    for m in range(2):
        for r in range(2):
            for c in range(2):
                assert torch.equal(mosaics[m, :, 3 * r : 3 * r + 3, 5 * c : 5 * c + 5], images[4 * m + 2 * r + c])


@pytest.mark.parametrize(("height", "width"), [(4, 4), (3, 5), (1, 2)])
def test_a_location_takes_the_label_of_the_quadrant_holding_its_centre(height: int, width: int) -> None:
    quadrants = torch.tensor([[[1, 2], [3, 4]]])
    found = location_labels(quadrants, height, width)
    for i in range(height):
        for j in range(width):
            y, x = (i + 0.5) / height, (j + 0.5) / width  # the centre, as a share of the mosaic's side
            assert int(found[0, i, j]) == int(quadrants[0, int(y >= 0.5), int(x >= 0.5)])


def test_mean_iou_is_the_mean_over_classes_present_of_intersection_over_union() -> None:
    torch.manual_seed(0)
    predicted, truth = torch.randint(4, (200,)), torch.randint(3, (200,))  # class 3 is only ever predicted
    expected = []
    for k in range(5):  # class 4 appears nowhere and does not count
        p, t = set((predicted == k).nonzero().flatten().tolist()), set((truth == k).nonzero().flatten().tolist())
        if p | t:
            expected.append(len(p & t) / len(p | t))
    assert mean_iou(predicted, truth, 5) == pytest.approx(sum(expected) / len(expected))
    assert mean_iou(truth, truth, 3) == 1.0


def test_eval_dense_labels_digit_mosaics_far_above_chance(tmp_path: Path) -> None:
    from invprop.cli import main

    run = tmp_path / "run"
    common = ["--set", "model.backbone=digits_convnet", "--set", "eval.dense_mosaics=60"]
    assert main(["-q", "train", "--epochs", "1", "--out", str(run), *common]) == 0
    assert main(["-q", "eval", "dense", "--checkpoint", str(run), *common]) == 0
    (dense,) = [e for e in json.loads((run / "metrics.json").read_text())["eval"] if e["protocol"] == "dense"]
    assert dense["dense_mosaics"] == 60 and dense["dense_map"] == [8, 8]  # 16x16 mosaics of 8x8 digits
    assert dense["dense_top1"] > 0.25 and 0 < dense["dense_miou"] <= dense["dense_top1"] + 0.5  # chance: 0.1
