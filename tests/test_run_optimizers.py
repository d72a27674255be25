"""Several optimisers and stages: each optimiser owns and steps its own parameters, in the stages that name it, with
its own recipe and a schedule over its own epochs; a run stopped at a stage's end or inside a later stage resumes
exactly (weights and every optimiser's state); bad declarations and settings are refused in one line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.config import Config, OptimizerSettings, from_dict, preset
from invprop.engine import Trainer, load_checkpoint
from invprop.engine.run_optimizers import StagePlan
from invprop.errors import ConfigError
from invprop.methods import (
    MAIN,
    METHODS,
    Accumulation,
    Batch,
    BuildContext,
    Method,
    MethodSpec,
    Part,
    Stage,
    StepOutput,
)
from invprop.methods.spec import register_method
from invprop.schedules import lr_factor
from invprop.settings import NON_NEGATIVE, section, setting

TOY = "toy-adversary"


@dataclass
class ToySettings:
    """The toy's own section."""

    critic_epochs: int = setting(1, "epochs in which the critic trains alone", bounds=NON_NEGATIVE)


@dataclass
class ToySections:
    """The toy's sections: its own, and its critic's optimiser."""

    toy: ToySettings = section(ToySettings, "the toy adversary")
    toy_critic_optim: OptimizerSettings = section(OptimizerSettings, "the critic's optimiser")


class ToyAdversary(Method):
    """A critic tells the encoder's embeddings from Gaussian noise; the encoder learns to look like noise."""

    def __init__(self, settings: ToySections, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.critic = nn.Sequential(nn.Linear(context.embedding_dim, 8), nn.ReLU(), nn.Linear(8, 1))
        self.critic_steps = 0

    def part_modules(self, name: str) -> list[nn.Module]:
        return [self.critic]

    def _scores(self, batch: Batch) -> tuple[Tensor, Tensor]:
        embeddings = self.encode(self.views_of(batch))
        noise = torch.randn_like(embeddings)
        return self.critic(embeddings).squeeze(1), self.critic(noise).squeeze(1)

    def part_step(self, name: str, batch: Batch) -> StepOutput:
        real, noise = self._scores(batch)
        loss = F.softplus(-noise).mean() + F.softplus(real).mean()  # noise is "real" to the critic
        return StepOutput(loss, {"critic_accuracy": ((noise > 0).float().mean() + (real < 0).float().mean()) / 2})

    def training_step(self, batch: Batch) -> StepOutput:
        real, _ = self._scores(batch)
        return StepOutput(F.softplus(-real).mean(), {})


SPEC = MethodSpec(
    "a toy adversary for the engine's tests",
    ToySections,
    parts=(Part("critic", "toy_critic_optim"),),
    stages=(Stage("critic", ("critic",), "toy.critic_epochs"), Stage("adversarial", ("critic", MAIN))),
    compare=False,
    accumulation=Accumulation.REFUSED,
    accumulation_note="the critic steps between the encoder's steps",
)


@pytest.fixture
def toy() -> Iterator[str]:
    register_method(TOY, SPEC)(ToyAdversary)
    yield TOY
    del METHODS._entries[TOY]  # noqa: SLF001 - the test's method leaves the registry as it found it


def toy_config(epochs: int = 3, **optim: object) -> Config:
    critic = {"optimizer": "adam", "lr": 1e-3, "schedule": "constant", "weight_decay": 0.0}
    return from_dict(
        {"method": TOY, "epochs": epochs, "toy_critic_optim": critic, "optim": {"batch_size": 128, **optim},
         "eval": {"every": 10}},
        base=preset("digits"),
    )  # fmt: skip


def test_a_stage_plan_places_each_epoch_and_counts_each_optimisers_epochs() -> None:
    plan = StagePlan(((Stage("a", ("x",), "s.a"), 2), (Stage("b", ("x", MAIN), "s.b"), 3), (Stage("c", (MAIN,)), 1)))
    assert [plan.stage_of(e).name for e in range(1, 8)] == ["a", "a", "b", "b", "b", "c", "c"]
    assert (plan.epochs_of("x"), plan.epochs_of(MAIN)) == (5, 4)
    assert [plan.epochs_before(MAIN, e) for e in range(1, 7)] == [0, 0, 0, 1, 2, 3]
    assert plan.staged and not StagePlan(((Stage("one", (MAIN,)), 4),)).staged


def test_each_optimiser_owns_its_parameters_and_steps_only_in_its_stages(toy: str, tmp_path: Path) -> None:
    cfg = toy_config(epochs=3)
    trainer = Trainer(cfg, tmp_path, progress=False)
    main, critic = trainer.optimizers[MAIN].optimizer, trainer.optimizers["critic"].optimizer
    owned = [{id(p) for g in opt.param_groups for p in g["params"]} for opt in (main, critic)]
    assert owned[1] == {id(p) for p in trainer.method.critic.parameters()}
    assert not owned[0] & owned[1]
    assert owned[0] | owned[1] == {id(p) for p in trainer.method.parameters() if p.requires_grad}
    assert isinstance(critic, torch.optim.Adam) and isinstance(main, torch.optim.SGD)
    encoder = {k: v.clone() for k, v in trainer.encoder.state_dict().items()}
    critic_before = [p.detach().clone() for p in trainer.method.critic.parameters()]
    trainer.fit(stop_after=1)  # the critic's stage: the encoder is not stepped
    after = trainer.encoder.state_dict()
    weights = [k for k in encoder if encoder[k].is_floating_point() and "running" not in k]
    assert weights and all(torch.equal(encoder[k], after[k]) for k in weights)
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, trainer.method.critic.parameters()))
    Trainer(cfg, tmp_path, progress=False).fit(resume=True)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in history] == ["critic", "adversarial", "adversarial"]
    assert all(r["lr_critic"] == pytest.approx(1e-3) for r in history)  # its own recipe: Adam, constant
    assert "loss_main" not in history[0] and {"loss_critic", "loss_main", "critic_accuracy"} <= set(history[1])
    # The main optimiser's cosine runs over its own two epochs, not the run's three.
    steps, plan, o = trainer.steps_per_epoch, trainer.lr_plan, cfg.optim

    def main_lr(step: int, epochs: int) -> float:
        return plan.peak * lr_factor(step, steps, epochs, o.schedule, plan.warmup_epochs, plan.milestones, o.gamma,
                                     plan.warmup_start, plan.floor)  # fmt: skip

    assert history[2]["lr"] == pytest.approx(main_lr(2 * steps - 1, 2))
    assert main_lr(2 * steps - 1, 2) != pytest.approx(main_lr(3 * steps - 1, 3))


@pytest.mark.parametrize("inside", [False, True], ids=["at-the-stage-end", "inside-the-second-stage"])
def test_a_staged_run_with_two_optimisers_resumes_exactly(toy: str, tmp_path: Path, inside: bool) -> None:
    from resume_check import assert_resumes_exactly

    cfg = toy_config(epochs=3)
    steps = Trainer(cfg, tmp_path / "probe", progress=False).steps_per_epoch
    assert_resumes_exactly(cfg, tmp_path, steps + 3 if inside else None)
    full = load_checkpoint(tmp_path / "full" / "last.pt")["part_optimizers"]["critic"]["state"]
    cut = load_checkpoint(tmp_path / "cut" / "last.pt")["part_optimizers"]["critic"]["state"]
    assert full.keys() == cut.keys() and full
    assert all(torch.equal(full[i][k], cut[i][k]) for i in full for k in full[i])


def test_stages_that_leave_the_last_no_epoch_and_accumulation_are_refused(toy: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stages before 'adversarial' take 3 epochs \(toy.critic_epochs=3\)"):
        Trainer(from_dict({"toy": {"critic_epochs": 3}}, base=toy_config(epochs=3)), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="does not accumulate gradients .*optim.accumulate=1"):
        Trainer(toy_config(accumulate=2), tmp_path, progress=False)


def test_a_part_must_name_one_of_the_methods_sections_and_be_stepped() -> None:
    bad_section = MethodSpec("x", ToySections, parts=(Part("critic", "nowhere"),))
    with pytest.raises(ValueError, match="part 'critic' needs .* one of the method's sections"):
        register_method("toy-bad", bad_section)(ToyAdversary)
    refused = Accumulation.REFUSED
    never_stepped = MethodSpec("x", ToySections, parts=(Part("critic", "toy_critic_optim"),),
                               stages=(Stage("only", (MAIN,)),), accumulation=refused)  # fmt: skip
    with pytest.raises(ValueError, match="every part is stepped by a stage"):
        register_method("toy-bad", never_stepped)(ToyAdversary)
    unknown_length = MethodSpec("x", ToySections, parts=(Part("critic", "toy_critic_optim"),),
                                stages=(Stage("a", ("critic",), "toy.nowhere"), Stage("b", (MAIN,))),
                                accumulation=refused)  # fmt: skip
    with pytest.raises(ValueError, match=r"stage lengths \['toy.nowhere'\] name no setting"):
        register_method("toy-bad", unknown_length)(ToyAdversary)
    accumulating = MethodSpec("x", ToySections, parts=(Part("critic", "toy_critic_optim"),))
    with pytest.raises(ValueError, match="declare accumulation=Accumulation.REFUSED"):
        register_method("toy-bad", accumulating)(ToyAdversary)
    assert "toy-bad" not in METHODS
