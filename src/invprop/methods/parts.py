"""What a method trains with beyond one optimiser: its further optimisers (:class:`Part`, e.g. a discriminator
stepped before the encoder's, the adversarial alternation) and its stages (:class:`Stage`, e.g. an autoencoder
trained first, then frozen while the next network learns).

A method without parts and stages has one optimiser, :data:`MAIN`, over all its parameters, stepped once per batch
through :meth:`~invprop.methods.Method.training_step`. A part owns the parameters of the modules
:meth:`~invprop.methods.Method.part_modules` names, and its own recipe: a section of the method's settings, of
:class:`invprop.optim_settings.OptimizerSettings`; the main optimiser owns the rest. On every batch of a stage the
engine steps the stage's optimisers one after another, in the order the stage lists them: it clears that optimiser's
gradients, computes that part's loss (:meth:`~invprop.methods.Method.part_step`; the main one's by
``training_step``), backpropagates it and steps that optimiser alone. Each optimiser's learning-rate schedule runs
over the epochs of the stages that step it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The name of a method's main optimiser: its recipe is the run's ``optim`` section, and it owns every parameter
#: no part claims (the encoder's among them).
MAIN = "main"


@dataclass(frozen=True)
class Part:
    """An optimiser of a method beside the main one.

    Attributes:
        name: what the method calls it in :meth:`~invprop.methods.Method.part_modules` and ``part_step`` (e.g.
            ``discriminator``); its loss is logged as ``loss_<name>``.
        section: the method's settings section (an :class:`~invprop.optim_settings.OptimizerSettings`) holding its
            recipe: its optimiser, learning rate and batch rule, weight decay and schedule.
    """

    name: str
    section: str


@dataclass(frozen=True)
class Stage:
    """A stretch of a method's run in which the same optimisers step.

    Attributes:
        name: recorded with each epoch of the stage in the run's history (e.g. ``autoencoder``).
        steps: the optimisers stepped on each batch, in order (:data:`MAIN` or a :class:`Part`'s name).
        epochs: the dotted key of the method's setting that gives the stage's epochs (e.g.
            ``spot_artifacts.autoencoder_epochs``); None for the last stage, which takes the rest of the run.
    """

    name: str
    steps: tuple[str, ...]
    epochs: str | None = None


def one_stage(parts: tuple[Part, ...]) -> tuple[Stage, ...]:
    """The stages of a method that declares none: one, stepping its parts in their order and then the main
    optimiser (the adversarial alternation: the discriminator first, then the encoder against it)."""
    return (Stage("train", (*(part.name for part in parts), MAIN)),)


__all__ = ["MAIN", "Part", "Stage", "one_stage"]
