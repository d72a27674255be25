"""config.yaml's story of changes: recorded per epoch, merged when never trained, read back and refused if malformed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from invprop.config import SettingChange, from_dict, preset, setting_changes
from invprop.engine.run_settings import (
    CHANGES_KEY,
    CONFIG_NAME,
    changes_at,
    read_run_settings,
    record_changes,
    split_changes,
    write_run_settings,
)
from invprop.errors import CheckpointError


def test_changes_are_listed_key_by_key_and_marked_when_they_may_change_on_resume() -> None:
    saved = preset("digits")
    new = from_dict({"epochs": 200, "optim": {"batch_size": 64}, "eval": {"every": 5}, "device": "cpu"}, base=saved)
    changes = {c.key: c for c in setting_changes(saved, new)}
    assert set(changes) == {"epochs", "optim.batch_size", "eval.every", "device"}
    assert changes["optim.batch_size"] == SettingChange("optim.batch_size", 128, 64, resumable=False)
    assert changes["epochs"].resumable and changes["eval.every"].resumable and changes["device"].resumable
    assert setting_changes(saved, from_dict({}, base=saved)) == []


def test_another_method_s_keys_are_changes_that_cannot_be_resumed() -> None:
    saved = preset("digits")
    new = from_dict({"method": "instance-classifier"}, base=saved)
    changes = setting_changes(saved, new)
    assert "method" in {c.key for c in changes}
    assert all(not c.resumable for c in changes if c.key.startswith(("loss.", "bank.", "classifier.")))
    assert any(c.key.startswith("classifier.") and c.saved is None for c in changes)


def test_record_changes_appends_per_epoch_and_merges_an_epoch_never_trained() -> None:
    story = record_changes([], 3, [SettingChange("optim.batch_size", 128, 64, False)])
    story = record_changes(story, 5, [SettingChange("optim.lr", 0.05, 0.01, False)])
    assert [entry["epoch"] for entry in story] == [3, 5]
    # Epoch 5 never completed under lr 0.01: changing again at epoch 5 rewrites that entry instead of adding one.
    merged = record_changes(
        story, 5, [SettingChange("optim.lr", 0.01, 0.02, False), SettingChange("epochs", 9, 12, True)]
    )
    assert merged[1] == {
        "epoch": 5,
        "settings": {"optim.lr": {"from": 0.05, "to": 0.02}, "epochs": {"from": 9, "to": 12}},
    }
    assert record_changes(story, 6, []) == story
    assert changes_at(merged, 5) == merged[1]["settings"] and changes_at(merged, 4) is None


def test_the_settings_file_keeps_values_and_story_and_reads_back(tmp_path: Path) -> None:
    cfg = preset("digits")
    story = record_changes([], 2, [SettingChange("optim.batch_size", 128, 64, False)])
    write_run_settings(cfg, story, tmp_path / CONFIG_NAME)
    raw = yaml.safe_load((tmp_path / CONFIG_NAME).read_text())
    assert raw[CHANGES_KEY] == story and raw["optim"]["batch_size"] == cfg.optim.batch_size
    back = read_run_settings(tmp_path)
    assert back is not None and back.changes == story and CHANGES_KEY not in back.values
    write_run_settings(cfg, [], tmp_path / CONFIG_NAME)  # no story: no key
    assert CHANGES_KEY not in yaml.safe_load((tmp_path / CONFIG_NAME).read_text())
    assert read_run_settings(tmp_path / "missing") is None


@pytest.mark.parametrize("bad", ["changes: 3\n", "changes: [{settings: {}}]\n", "- a list\n", "a: [\n"])
def test_a_malformed_settings_file_is_one_line(bad: str, tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text(bad)
    with pytest.raises(CheckpointError) as info:
        read_run_settings(tmp_path)
    assert "\n" not in str(info.value)
    assert split_changes({"epochs": 3}).changes == []
