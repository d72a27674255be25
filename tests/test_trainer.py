from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from devices import DEVICES, cuda_only
from floors import untrained_knn_of
from invprop.config import from_dict, preset
from invprop.engine import Trainer, load_checkpoint
from invprop.errors import CheckpointError, ConfigError


def small_config(epochs: int, **loss):
    return from_dict(
        {"epochs": epochs, "loss": {"rampup_epochs": 1, **loss}, "eval": {"every": 1}},
        base=preset("digits"),
    )


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg = small_config(3)
    full = Trainer(cfg, tmp_path / "full", progress=False).fit()
    Trainer(cfg, tmp_path / "split", progress=False).fit(stop_after=1)
    first = load_checkpoint(tmp_path / "split" / "last.pt")
    assert first["epoch"] == 1
    resumed = Trainer(cfg, tmp_path / "split", progress=False).fit(resume=True)
    for key in ("knn_top1", "knn_top5", "loss", "loss_ins", "loss_inv", "epochs"):
        assert full.metrics[key] == resumed.metrics[key], key
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    history = [json.loads(line) for line in (tmp_path / "split" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_checkpoint_holds_everything_needed(tmp_path: Path) -> None:
    Trainer(small_config(1), tmp_path, progress=False).fit()
    state = load_checkpoint(tmp_path / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "config", "rng", "seconds"} <= set(state)
    assert {"bank.features", "bank.neighbors"} <= set(state["model"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("knn_top1", "knn_top5", "loss", "epochs", "seconds", "baseline_raw_knn_top1"):
        assert metrics[key] is not None, key
    assert (tmp_path / "config.yaml").is_file()


def test_short_digits_run_beats_the_untrained_network(tmp_path: Path) -> None:
    cfg = small_config(12)
    trainer = Trainer(cfg, tmp_path, progress=False)
    untrained = trainer.evaluate()["knn_top1"]
    result = trainer.fit()
    assert result.metrics["knn_top1"] > untrained + 0.02
    assert result.metrics["knn_top1"] > result.metrics["baseline_raw_knn_top1"]  # and beats raw pixels


def test_rebuild_graph_mode_runs_and_keeps_table_exact(tmp_path: Path) -> None:
    from invprop.core import knn_graph

    cfg = from_dict({"bank": {"graph_update": "rebuild"}}, base=small_config(1))
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.fit()
    bank = trainer.method.bank
    assert torch.equal(bank.neighbors, knn_graph(bank.features, bank.num_neighbors))


def test_settings_checked_against_the_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_neighbors"):
        Trainer(from_dict({"bank": {"num_neighbors": 5000}}, base=small_config(1)), tmp_path)
    with pytest.raises(ConfigError, match="batch_size"):
        Trainer(from_dict({"optim": {"batch_size": 5000}}, base=small_config(1)), tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(bad)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an invprop checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_monitor_uses_fresh_features_not_the_bank(tmp_path: Path) -> None:
    trainer = Trainer(small_config(1), tmp_path, progress=False)
    before = trainer.evaluate()
    trainer.method.bank.features.zero_()  # a monitor reading the bank would change
    assert trainer.evaluate() == before


def test_per_image_pipeline_is_the_same_with_any_number_of_workers(tmp_path: Path) -> None:
    results = []
    for workers in (0, 2):
        cfg = from_dict({"data": {"pipeline": "per_image", "num_workers": workers}}, base=small_config(1))
        results.append(Trainer(cfg, tmp_path / f"w{workers}", progress=False).fit().metrics)
    for key in ("loss", "loss_ins", "knn_top1"):
        assert results[0][key] == results[1][key], key


def test_tensor_pipeline_is_used_for_builtin_datasets_and_resumes_exactly(tmp_path: Path) -> None:
    trainer = Trainer(small_config(1), tmp_path / "a", progress=False)
    assert trainer.data.pipeline == "tensor"
    first = trainer.fit().metrics
    again = Trainer(small_config(1), tmp_path / "b", progress=False).fit().metrics
    assert first["loss"] == again["loss"] and first["knn_top1"] == again["knn_top1"]


@pytest.mark.slow
def test_compiled_encoder_trains_and_keeps_checkpoint_keys(tmp_path: Path) -> None:
    plain = Trainer(small_config(1), tmp_path / "plain", progress=False)
    compiled_cfg = from_dict({"compile": True}, base=small_config(1))
    compiled = Trainer(compiled_cfg, tmp_path / "compiled", progress=False)
    result = compiled.fit()
    assert result.finished and result.metrics["knn_top1"] > untrained_knn_of(tmp_path / "compiled")
    # Compiling the forward in place keeps parameter names, so checkpoints load either way.
    assert set(compiled.method.state_dict()) == set(plain.method.state_dict())
    plain.method.load_state_dict(load_checkpoint(tmp_path / "compiled" / "last.pt")["model"])


def test_distributed_settings_are_checked_before_any_work(tmp_path) -> None:
    from invprop.engine.process_group import DistributedContext
    from invprop.errors import ConfigError

    two = DistributedContext(rank=0, world_size=2)
    with pytest.raises(ConfigError, match="global batch: it must be a multiple of the 2 processes"):
        Trainer(from_dict({"optim": {"batch_size": 63}}, base=preset("digits")), tmp_path, context=two)
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        Trainer(
            from_dict({"device": "cpu", "distributed": {"sync_bn": True}}, base=preset("digits")), tmp_path, context=two
        )


@pytest.mark.parametrize("pipeline", ["tensor", "per_image"])
def test_instance_classifier_run_resumes_exactly(pipeline: str, tmp_path: Path) -> None:
    cfg = from_dict(
        {"method": "instance-classifier", "epochs": 2, "data": {"pipeline": pipeline}, "optim": {"batch_size": 64},
         "classifier": {"hard_classes": 10}},
        base=preset("digits"),
    )  # fmt: skip
    full = Trainer(cfg, tmp_path / "full", progress=False).fit()
    assert full.metrics["knn_top1"] > untrained_knn_of(tmp_path / "full") and full.metrics["loss"] > 0
    Trainer(cfg, tmp_path / "split", progress=False).fit(stop_after=1)
    resumed = Trainer(cfg, tmp_path / "split", progress=False).fit(resume=True)  # no second prior pass
    assert resumed.metrics["loss"] == full.metrics["loss"] and resumed.metrics["knn_top1"] == full.metrics["knn_top1"]
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert {"classifier.weight", "classifier.hard"} <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (a["classifier.hard"] >= 0).all()  # mined at the start of each epoch
    if pipeline == "tensor":  # the eval protocols read its encoder like an InvP run's
        from invprop.cli import main

        assert main(["-q", "eval", "knn", "--checkpoint", str(tmp_path / "full")]) == 0


#: One training step under bf16 autocast against the same step in fp32, from the same weights and batch: the loss
#: agrees within this relative tolerance (measured 6e-5 on a CPU) ...
BF16_LOSS_RTOL = 5e-3
#: ... and the parameter updates point the same way: their cosine similarity is at least this (measured 0.989 on a
#: CPU; bf16 keeps 8 significant bits of every activation, so single-step gradients differ in their low bits).
BF16_UPDATE_MIN_COSINE = 0.9


def one_step(run_dir: Path, device: str, **settings: object) -> tuple[float, torch.Tensor]:
    """The first step of a digits InvP run with both loss terms on: its loss and the parameter update it made."""
    cfg = from_dict({"device": device, "epochs": 2, "loss": {"rampup_epochs": 0}, **settings}, base=preset("digits"))
    trainer = Trainer(cfg, run_dir, progress=False)

    def flat() -> torch.Tensor:
        return torch.cat([p.detach().float().flatten().cpu() for p in trainer.method.encoder.parameters()])

    before = flat()
    loss = trainer.train_epoch(1, max_steps=1)["loss"]
    return loss, flat() - before


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_step_matches_the_fp32_step(device: str, tmp_path: Path) -> None:
    loss32, update32 = one_step(tmp_path / "fp32", device, precision="fp32")
    loss16, update16 = one_step(tmp_path / "bf16", device, precision="bf16")
    assert loss16 == pytest.approx(loss32, rel=BF16_LOSS_RTOL)
    assert float(torch.nn.functional.cosine_similarity(update16, update32, dim=0)) >= BF16_UPDATE_MIN_COSINE
    assert loss16 != loss32 or not torch.equal(update16, update32)  # autocast was really on


@cuda_only
def test_channels_last_gives_the_same_step(tmp_path: Path) -> None:
    # fp32 on both sides; cuDNN may pick other (TF32) kernels for the other layout, hence a tolerance.
    loss_cl, update_cl = one_step(tmp_path / "cl", "cuda", precision="fp32", channels_last=True)
    loss_nchw, update_nchw = one_step(tmp_path / "nchw", "cuda", precision="fp32", channels_last=False)
    assert loss_cl == pytest.approx(loss_nchw, rel=1e-3)
    assert float(torch.nn.functional.cosine_similarity(update_cl, update_nchw, dim=0)) >= 0.99


def test_accumulated_steps_count_their_batches_scale_the_lr_and_resume_exactly(tmp_path: Path) -> None:
    from resume_check import assert_resumes_exactly

    cfg = from_dict({"epochs": 2, "optim": {"batch_size": 64, "accumulate": 2, "lr_scaling": "linear",
                     "reference_batch": 128}, "log": {"every_steps": 2}}, base=preset("digits"))  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "probe", progress=False)
    assert (trainer.batches_per_epoch, trainer.steps_per_epoch) == (22, 11)
    assert trainer.lr_plan.peak == cfg.optim.lr  # the optimiser's batch is 2 x 64 = the reference 128
    calls = {"n": 0}
    original = trainer.optimizer.step

    def counted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        return original(*args, **kwargs)

    trainer.optimizer.step = counted  # type: ignore[method-assign]
    trainer.train_epoch(1)
    assert calls["n"] == 11 and trainer.global_step == 11
    assert_resumes_exactly(cfg, tmp_path / "resume", stop_at_step=13)  # epoch 2, after its second optimiser step
