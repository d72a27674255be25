"""Multi-task self-supervised learning (Doersch & Zisserman, ICCV 2017) as a training method: ``method: multitask``.

One trunk, several self-supervised tasks trained together: the paper's "naive multi-head" network, ``L = sum_t w_t
L_t`` (:func:`invprop.core.pretext_losses.weighted_task_sum`). Each task is this library's own method of that name,
with its own section of settings, its own head (the ``model.head`` architecture, initialised apart) and its own
classifier or decoder, all on the one backbone; every task sees every batch. The first task's head is the encoder's
head, the one evaluation reads.

The paper's tasks were relative position, colourisation, exemplar and motion segmentation. Here: ``colorization``,
``exemplar`` and ``jigsaw`` -- the jigsaw puzzle stands in for relative position, which it extends from two patches
to nine (relative position itself is not in the library yet) -- and ``rotnet``; motion segmentation needs video.
Grey images (digits) cannot be colourised, so their preset trains jigsaw and exemplar.

The trunk's BatchNorm layers see every task's inputs (whole images, jigsaw tiles, grey images), so the running
statistics that evaluation uses mix them.

Not here: the paper's two refinements, both without published details -- the lasso (each task reading a sparse
learned combination of the trunk's layers) and the harmonisation of the tasks' inputs. Every task sees the run's one
augmentation (``data.augment``).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from invprop.core.pretext_losses import weighted_task_sum
from invprop.errors import ConfigError
from invprop.methods.classification.exemplar import ExemplarSettings
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.pretext.colorization import ColorizationSettings
from invprop.methods.pretext.jigsaw import JigsawSettings
from invprop.methods.pretext.rotnet import RotNetSettings
from invprop.methods.spec import METHODS, Accumulation, Curve, MethodSpec, Torchrun, register_method
from invprop.settings import Reference, close_match, section, setting

_PAPER = "Doersch & Zisserman (2017)"
#: The paper's still-image tasks that the library has (jigsaw for relative position).
PAPER_TASKS = ("jigsaw", "colorization", "exemplar")


@dataclass
class MultiTaskOptions:
    """The ``multitask`` section."""

    tasks: list[str] = setting(
        None,
        "the tasks trained together on the one backbone, each a method with its own section and head: colorization, "
        "exemplar, jigsaw, rotnet",
        factory=lambda: list(PAPER_TASKS),
    )
    weights: list[float] | None = setting(None, "each task's loss weight, in the order of tasks (null: 1 each)")


@dataclass
class MultiTaskSettings:
    """The settings of the multi-task method: its own section and those of the tasks it can train."""

    multitask: MultiTaskOptions = section(MultiTaskOptions, "which tasks share the trunk, and their weights")
    colorization: ColorizationSettings = section(ColorizationSettings, "the colourisation task")
    exemplar: ExemplarSettings = section(ExemplarSettings, "the exemplar task")
    jigsaw: JigsawSettings = section(JigsawSettings, "the jigsaw task")
    rotnet: RotNetSettings = section(RotNetSettings, "the rotation task")


#: The tasks a multi-task run can train: the sections of :class:`MultiTaskSettings` besides its own.
TASKS = tuple(f.name for f in dataclasses.fields(MultiTaskSettings) if f.name != "multitask")

SPEC = MethodSpec(
    "Multi-task self-supervision: several pretext tasks, one trunk, one head each, losses summed (Doersch & "
    "Zisserman, 2017)",
    MultiTaskSettings,
    presets={"digits": {"multitask": {"tasks": ["jigsaw", "exemplar"]}}},
    references={"*": {"multitask.weights": Reference(None, f"{_PAPER}, Sec. 3: the naive multi-head sum")}},
    deviations={
        "digits": {"multitask.tasks": "grey digits cannot be colourised: jigsaw and exemplar only"},
    },
    headline=("multitask.tasks",),
    terms=("loss",),
    curves=(Curve("weighted sum of the tasks' losses", ("loss",)),),
    torchrun=Torchrun.REFUSED,
    torchrun_note="the tasks' heads reach the trunk outside the data-parallel wrapper",
    accumulation=Accumulation.RUNS,
    accumulation_note="its tasks draw puzzles and dropout masks per batch",
    compare=False,
)


def _fresh(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every parameter re-initialised (its layers' ``reset_parameters``)."""
    fresh = copy.deepcopy(module)
    for layer in fresh.modules():
        reset = getattr(layer, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


@register_method("multitask", SPEC)
class MultiTask(Method):
    """``sum_t w_t L_t`` over the tasks, each built by its own method on an encoder that shares the backbone
    (Doersch & Zisserman, 2017, Sec. 3).

    Args:
        settings: the ``multitask`` section and the tasks' sections.
        encoder: backbone + head (the first task's).
        context: what each task's method is built with.
    """

    weights: Tensor

    def __init__(self, settings: MultiTaskSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        options = settings.multitask
        if not options.tasks:
            raise ConfigError(f"multitask.tasks is empty: give one or more of {', '.join(TASKS)}")
        for task in options.tasks:
            if task not in TASKS:
                raise ConfigError(f"multitask.tasks: unknown task {task!r}{close_match(task, TASKS)}; the tasks are "
                                  f"{', '.join(TASKS)}")  # fmt: skip
        if len(set(options.tasks)) != len(options.tasks):
            raise ConfigError(f"multitask.tasks names a task twice: {options.tasks}")
        weights = options.weights if options.weights is not None else [1.0] * len(options.tasks)
        if len(weights) != len(options.tasks):
            raise ConfigError(f"multitask.weights has {len(weights)} values for {len(options.tasks)} tasks; give one "
                              "per task, in order")  # fmt: skip
        backbone, head = getattr(encoder, "backbone"), getattr(encoder, "head")
        own = dataclasses.replace(context, forward=None)
        methods = []
        for number, task in enumerate(options.tasks):
            task_encoder = encoder if number == 0 else type(encoder)(backbone, _fresh(head))
            methods.append(METHODS.get(task).create(settings, task_encoder, own))
        views = {method.views for method in methods}
        if len(views) != 1:
            raise ConfigError(f"multitask.tasks {options.tasks} take different numbers of views ({sorted(views)})")
        self.views = views.pop()
        self.names = list(options.tasks)
        self.tasks = nn.ModuleList(methods)  # registers them; self.methods types them
        self.methods: list[Method] = methods
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)

    def shared_modules(self) -> list[nn.Module]:
        return [module for task in self.methods for module in task.shared_modules()]

    def training_step(self, batch: Batch) -> StepOutput:
        outputs = [task.training_step(batch) for task in self.methods]
        loss = weighted_task_sum(torch.stack([out.loss.float() for out in outputs]), self.weights)
        terms: dict[str, Tensor | float] = {}
        for out in outputs:
            terms.update(out.terms)
        return StepOutput(loss, terms, update=outputs)

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        for number, task in enumerate(self.methods):
            task.after_step([out.update[number] for out in outputs])

    @torch.no_grad()
    def before_training(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Each task that prepares from the data (colourisation's class rebalancing) sees the one epoch given."""
        needy = [task for task in self.methods if type(task).before_training is not Method.before_training]
        for task, copy_of_batches in zip(needy, itertools.tee(batches, len(needy))):
            task.before_training(copy_of_batches)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        return {key: value for task in self.methods for key, value in task.on_epoch_start(epoch).items()}

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {key: value for task in self.methods for key, value in task.on_epoch_end(epoch).items()}

    def reinitialised_parameters(self) -> list[nn.Parameter]:
        return [parameter for task in self.methods for parameter in task.reinitialised_parameters()]


__all__ = ["SPEC", "TASKS", "MultiTask", "MultiTaskOptions", "MultiTaskSettings"]
