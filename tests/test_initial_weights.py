"""Continued pretraining (``model.init_from``): a new run starts from an earlier run's encoder -- and from its own
state when the earlier run trained the same method on the same data -- says what it loaded, and refuses a source
that is not there in one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from invprop.config import from_dict, preset
from invprop.engine import Trainer, load_checkpoint
from invprop.errors import ConfigError


def _config(method: str, **values):
    return from_dict({"method": method, "epochs": 1, "data": {"subset": 200}, "eval": {"every": 5}, **values},
                     base=preset("digits", method))  # fmt: skip


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dino-source")
    Trainer(_config("dino"), run, progress=False).fit()
    return run


def test_a_run_of_the_same_method_starts_from_the_sources_encoder_and_own_state(dino_run: Path, caplog) -> None:
    saved = load_checkpoint(dino_run / "last.pt")["model"]
    with caplog.at_level(logging.INFO, logger="invprop.engine.initial_weights"):
        trainer = Trainer(_config("dino", model={"init_from": str(dino_run)}), dino_run.parent / "next", progress=False)
    state = trainer.method.state_dict()
    assert saved.keys() == state.keys()
    for name in saved:  # the encoder, the teacher, the last layers and the centre
        assert torch.equal(state[name], saved[name]), name
    assert "loaded the encoder (backbone, head" in caplog.text and "dino's own state" in caplog.text


def test_another_method_takes_the_encoder_alone_and_its_teacher_starts_as_a_copy_of_it(dino_run: Path, caplog) -> None:
    saved = load_checkpoint(dino_run / "last.pt")["model"]
    with caplog.at_level(logging.INFO, logger="invprop.engine.initial_weights"):
        trainer = Trainer(_config("byol", model={"init_from": str(dino_run / "last.pt"), "head": "mlp3_gelu",
                                                 "hidden_dim": 512, "embedding_dim": 128}),
                          dino_run.parent / "byol", progress=False)  # fmt: skip
    state = trainer.method.state_dict()
    backbone = [name for name in saved if name.startswith("encoder.backbone.")]
    assert backbone and all(torch.equal(state[name], saved[name]) for name in backbone)
    target = {name.removeprefix("target."): value for name, value in state.items() if name.startswith("target.")}
    assert target and all(torch.equal(value, state[f"encoder.{name}"]) for name, value in target.items())
    assert "own state" not in caplog.text and "new: method " in caplog.text


def test_a_missing_source_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.init_from=.*no last.pt there") as error:
        Trainer(_config("simclr", model={"init_from": str(tmp_path / "nowhere")}), tmp_path / "run", progress=False)
    assert "\n" not in str(error.value)


def test_a_resumed_run_does_not_need_its_source_any_more(dino_run: Path, tmp_path: Path) -> None:
    import shutil

    source = tmp_path / "source"
    shutil.copytree(dino_run, source)
    cfg = _config("dino", epochs=2, model={"init_from": str(source)})
    Trainer(cfg, tmp_path / "run", progress=False).fit(stop_after=1)
    shutil.rmtree(source)  # moved or deleted after the run began
    with pytest.raises(ConfigError, match="no last.pt there"):
        Trainer(cfg, tmp_path / "other", progress=False)  # a new run still needs it
    resumed = Trainer(cfg, tmp_path / "run", progress=False, resuming=True).fit(resume=True)
    assert resumed.metrics["epochs"] == 2
