"""How a method describes itself to the rest of invprop: one :class:`MethodSpec`, registered with its class by
:func:`register_method` in the method's own file. The engine, ``compare``, ``ablate``, the report, ``presets``
and the contract test (tests/test_method_contract.py) read the specs; none of them names a method.

A spec holds the method's settings (one section of the run's settings, or a dataclass of several), its defaults and
its published training recipes per dataset preset, the published value of each setting with its source, why a
default differs from it, its ablation table, the curves and figures the report draws for it, the logged terms its
``metrics.json`` keeps, whether ``invprop compare`` runs it by default, what a short digits run of it must reach, and
what it does under torchrun, and -- for a method that trains more than one network -- its further optimisers and
its stages (:mod:`invprop.methods.parts`).
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from torch import Tensor, nn

from invprop.core.faiss_search import faiss_available
from invprop.errors import ConfigError
from invprop.methods.method import BuildContext, Method
from invprop.methods.parts import MAIN, Part, Stage, one_stage
from invprop.models.colour_split import ColourSplitBackbone
from invprop.registry import Registry
from invprop.settings import Reference, check, fields_by_key, merge, section


@dataclass(frozen=True)
class Curve:
    """One figure of the report: the history's ``keys`` over epochs, a panel each, a line per run."""

    title: str
    keys: tuple[str, ...]
    ylabel: str = "loss"


#: A method's settings dataclass.
S = TypeVar("S")


@dataclass(frozen=True)
class FigureInputs(Generic[S]):
    """What a method's figure is computed from (the report gathers it from a run directory).

    Attributes:
        settings: the method's own settings of the run.
        state: the checkpoint's model state (the method's buffers and weights, by name).
        num_images: N, the training images (a figure names them by index).
        embed: ``embed(indices) -> (M, D)``: unit embeddings of training images, not augmented.
    """

    settings: S
    state: Mapping[str, Tensor]
    num_images: int
    embed: Callable[[Tensor], Tensor]


#: A cell of an image grid: a training image's index and its caption; None leaves the cell empty.
Cell = tuple[int, str] | None


@dataclass(frozen=True)
class GridFigure(Generic[S]):
    """A figure of training images in a grid (e.g. InvP's anchors with their positives); ``grid`` gives its rows, or
    None when the run cannot show it."""

    title: str
    caption: str
    grid: Callable[[FigureInputs[S]], list[list[Cell]] | None]


@dataclass(frozen=True)
class ImageRows:
    """A figure of images the trained method makes, e.g. inputs, their damaged copies and the reconstructions.

    Attributes:
        title: the figure's title.
        caption: what it shows.
        rows: ``rows(method, images)``: for a batch of normalised training images (B, C, H, W), each row's caption
            and its images in [0, 1], (B, C', H', W') with C' 1 or 3, one column per image; called in eval mode
            without gradients on the method built from the run's checkpoint.
    """

    title: str
    caption: str
    rows: Callable[[Any, Tensor], Sequence[tuple[str, Tensor]]]


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table: overrides applied over the shared base settings."""

    description: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ablation:
    """A method's ablation table (``invprop ablate --method NAME``).

    Attributes:
        variants: the rows, by name, in table order.
        paper: overrides that give the setting the paper ran the table in (``--paper``), applied over the preset and
            the YAML file (``--set`` still wins).
        paper_source: where that setting is written.
        columns: the table's own columns beside kNN and time: ``(metrics.json key, heading)``.
        notes: what those columns mean, for the table's footnote.
    """

    variants: Mapping[str, Variant]
    paper: Mapping[str, Any]
    paper_source: str
    columns: tuple[tuple[str, str], ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class Recipe:
    """A published training recipe: values of the ``optim`` section, as written in ``source``.

    ``optim`` holds only published values (the presets adapt what does not fit a dataset, saying why); each becomes
    the reference of its key in ``invprop presets --keys``.
    """

    source: str
    optim: Mapping[str, Any]


class Floor(enum.Enum):
    """What a short run must reach: the untrained encoder's held-out kNN, raw pixels', or nothing but finite
    losses."""

    UNTRAINED = "untrained"
    RAW_PIXELS = "raw"
    FINITE = "finite"


@dataclass(frozen=True)
class SmokeRun:
    """The short digits run of the contract test and what it must reach.

    Attributes:
        epochs: its length.
        metric: the held-out kNN it is judged by: ``knn_top1`` (embeddings) or ``knn_backbone_top1`` (features).
        floor: what ``metric`` must reach (at least).
        settings: nested overrides over the method's digits preset for the short run.
        why: why the floor is lower than the untrained encoder (required then).
    """

    epochs: int = 3
    metric: str = "knn_top1"
    floor: Floor = Floor.UNTRAINED
    settings: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""


class Accumulation(enum.Enum):
    """What gradient accumulation (``optim.accumulate``) gives a method: exactly the gradients of one batch of all
    the chunks (``EXACT``: a loss that is a mean over samples, against a bank, a queue or fixed targets; BatchNorm's
    statistics stay those of each chunk), the same but with each chunk's own random draws (``RUNS``), or nothing
    right (``REFUSED``: a loss over the whole batch at once -- in-batch negatives, batch statistics, Sinkhorn)."""

    EXACT = "exact"
    RUNS = "runs"
    REFUSED = "refused"


class Torchrun(enum.Enum):
    """What a method does under torchrun: trains the weights one process would with the same global batch
    (``EXACT``), runs but draws per process (``RUNS``), or refuses with one line (``REFUSED``)."""

    EXACT = "exact"
    RUNS = "runs"
    REFUSED = "refused"


M = TypeVar("M", bound=Method)


@dataclass(frozen=True)
class MethodSpec(Generic[S]):
    """A training method as the registry holds it.

    Attributes:
        summary: one line for listings and tables.
        settings: the dataclass of the method's own settings: with ``section``, one section of the run's settings
            named so; without, each of its fields is a section (e.g. InvP's ``bank`` and ``loss``).
        section: the name of the method's one section (None: ``settings`` is a dataclass of sections).
        section_help: the section's help (with ``section``).
        build: ``(settings, encoder, context) -> Method`` (set by :func:`register_method`: the method's class).
        presets: per dataset preset (``"*"``: every preset, first), overrides of the method's sections and of shared
            keys (applied along the preset's ``extends``, after the recipe: an ``optim`` value here adapts the recipe
            to the dataset, with its reason in ``deviations``).
        recipes: per dataset preset (``"*"``: every preset, first), the method's published training recipe, which the
            presets apply over the dataset's ``optim`` when ``optim.recipe`` is ``own`` (the default): ``"*"`` the
            paper's (ImageNet), a preset's the published recipe for data like it (e.g. CIFAR-sized images).
        references: per preset (``"*"``: every preset), the published value of dotted keys -- the method's own and
            shared ones -- from its paper or its authors' code (applied along ``extends``).
        deviations: per preset (``"*"``: the library defaults), why a default differs from its reference;
            ``invprop presets --keys`` prints both, and a test requires a reason for every difference.
        headline: the dotted keys listings show for the method.
        terms: the logged terms (and diagnostics) whose last-epoch values ``metrics.json`` keeps, in this order.
        curves: the report's figures of the method's own history keys.
        figures: the report's image figures of the method.
        image_rows: the report's figures of images the trained method makes (:class:`ImageRows`).
        ablation: its ablation table, if it has one.
        compare: ``invprop compare`` runs it without ``--methods``.
        smoke: the short digits run of the contract test.
        torchrun: what it does under torchrun (``REFUSED``: building it for a distributed run is a one-line error).
        torchrun_note: why, when it is not ``EXACT``.
        accumulation: what gradient accumulation gives it (``REFUSED``: the engine refuses ``optim.accumulate``).
        accumulation_note: why, when it is not ``EXACT``.
        accumulation_refused_by: given the method's settings, why they refuse accumulation (None: they do not),
            for options whose loss needs the whole batch (e.g. DINO's Sinkhorn centring).
        preflight: checks of the environment before any work, given the method's settings (e.g. an optional
            package the settings need).
        multi_crop: the method takes multi-crop small crops (``data.small_crops``).
        trains_head: the method trains ``model.head``; False: the head takes no part, and :meth:`freeze_unused`
            freezes it before any data-parallel wrapper (which would otherwise wait for its gradients).
        colour_only: the method needs three-channel images.
        colour_split: the method takes an encoder of one backbone per channel group (``model.colour_split``); the
            others refuse one.
        parts: the method's optimisers beside the main one, each with its recipe in a section of its own
            (:class:`~invprop.methods.parts.Part`).
        stages: the stretches of its run and the optimisers each steps (:class:`~invprop.methods.parts.Stage`);
            none: one stage stepping the parts, then the main optimiser.
        name: the registered name (set by :func:`register_method`).
        family: the method's family, its sub-package of :mod:`invprop.methods` (set by :func:`register_method`).
        sections_type: the dataclass of the run's sections of the method (derived by :func:`register_method`).
    """

    summary: str
    settings: type[S]
    section: str | None = None
    section_help: str = ""
    build: Callable[[S, nn.Module, BuildContext], Method] | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    recipes: Mapping[str, Recipe] = field(default_factory=dict)
    references: Mapping[str, Mapping[str, Reference]] = field(default_factory=dict)
    deviations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    headline: tuple[str, ...] = ()
    terms: tuple[str, ...] = ()
    curves: tuple[Curve, ...] = ()
    figures: tuple[GridFigure[S], ...] = ()
    image_rows: tuple[ImageRows, ...] = ()
    ablation: Ablation | None = None
    compare: bool = True
    smoke: SmokeRun = field(default_factory=SmokeRun)
    torchrun: Torchrun = Torchrun.EXACT
    torchrun_note: str = ""
    accumulation: Accumulation = Accumulation.EXACT
    accumulation_note: str = ""
    accumulation_refused_by: Callable[[S], str | None] | None = None
    preflight: Callable[[S], None] | None = None
    multi_crop: bool = False
    trains_head: bool = True
    colour_only: bool = False
    colour_split: bool = False
    parts: tuple[Part, ...] = ()
    stages: tuple[Stage, ...] = ()
    name: str = ""
    family: str = ""
    sections_type: type | None = None

    def sections(self) -> tuple[str, ...]:
        """Names of the method's settings sections."""
        fields: Any = self.settings  # (a dataclass: the registration checks it)
        return (self.section,) if self.section else tuple(f.name for f in dataclasses.fields(fields))

    def stage_plan(self, sections: Any, epochs: int) -> list[tuple[Stage, int]]:
        """Each stage of a run of ``epochs`` with the method's ``sections``, with its epochs (the last stage takes
        the rest); a one-line error when the earlier stages leave the last none."""
        stages = self.stages or one_stage(self.parts)
        values = fields_by_key(sections)
        counts = [int(values[stage.epochs][0]) if stage.epochs else 0 for stage in stages]
        taken = sum(counts)
        if taken >= epochs:
            keys = " + ".join(f"{stage.epochs}={count}" for stage, count in zip(stages, counts) if stage.epochs)
            raise ConfigError(f"method {self.name}'s stages before {stages[-1].name!r} take {taken} epochs ({keys}) "
                              f"of the run's {epochs}: raise epochs above {taken} or shorten those stages")  # fmt: skip
        counts[-1] = epochs - taken
        return list(zip(stages, counts))

    def new_sections(self) -> Any:
        """The run's sections of the method at their defaults (an instance of :attr:`sections_type`)."""
        assert self.sections_type is not None, "register the spec with register_method"
        return self.sections_type()

    def own(self, sections: Any) -> S:
        """The method's settings (an instance of :attr:`settings`) within the run's ``sections`` of it."""
        settings = getattr(sections, self.section) if self.section else sections
        assert isinstance(settings, self.settings), f"{type(settings).__name__} is not {self.settings.__name__}"
        return settings

    def create(self, sections: Any, encoder: nn.Module, context: BuildContext) -> Method:
        """The method, built from the run's ``sections`` of it around ``encoder``."""
        assert self.build is not None
        self.check_images(context.in_channels)
        self.check_torchrun(context.distributed)
        self.check_encoder(encoder)
        return self.build(self.own(sections), encoder, context)

    def accumulation_refusal(self, sections: Any) -> str | None:
        """Why a run with the method's ``sections`` cannot accumulate gradients, or None when it can."""
        if self.accumulation is Accumulation.REFUSED:
            return self.accumulation_note
        return self.accumulation_refused_by(self.own(sections)) if self.accumulation_refused_by else None

    def freeze_unused(self, encoder: nn.Module) -> None:
        """Freeze what of ``encoder`` the method does not train (its head, unless :attr:`trains_head`); called
        before the encoder is wrapped for data-parallel training."""
        head = getattr(encoder, "head", None)
        if not self.trains_head and isinstance(head, nn.Module):
            head.requires_grad_(False)

    def check_encoder(self, encoder: nn.Module) -> None:
        """A one-line error when ``encoder`` has one backbone per channel group and the method does not take one."""
        backbone = getattr(encoder, "backbone", None)
        if isinstance(backbone, ColourSplitBackbone) and not self.colour_split:
            raise ConfigError(f"method {self.name} trains one backbone on the whole image; model.colour_split gives "
                              "one per channel group, for cmc: leave model.colour_split null")  # fmt: skip

    def check_torchrun(self, distributed: bool) -> None:
        """A one-line error when a distributed run asks for a method that refuses torchrun."""
        if distributed and self.torchrun is Torchrun.REFUSED:
            why = f" ({self.torchrun_note})" if self.torchrun_note else ""
            raise ConfigError(f"method {self.name} does not run under torchrun yet{why}; run it as one process")

    def check_images(self, in_channels: int) -> None:
        """A one-line error when the method cannot train on images of ``in_channels`` channels."""
        if self.colour_only and in_channels != 3:
            raise ConfigError(f"method {self.name} needs colour images, and these have {in_channels} channel(s); "
                              "choose a colour dataset (e.g. --preset cifar10) or another method")  # fmt: skip


#: Every training method, by name.
METHODS: Registry[MethodSpec[Any]] = Registry("method")


def _check_parts(name: str, spec: MethodSpec[Any]) -> None:
    """Errors in a spec's parts and stages, at registration: unknown sections and optimisers, a part no stage
    steps, a stage without its length that is not the last, a length that names no setting."""
    sections = spec.sections()
    names = [part.name for part in spec.parts]
    for part in spec.parts:
        if part.section not in sections or part.name == MAIN or names.count(part.name) > 1:
            raise ValueError(f"method {name}: part {part.name!r} needs a unique name other than {MAIN!r} and one of "
                             f"the method's sections ({', '.join(sections)}), got {part.section!r}")  # fmt: skip
    if spec.parts and spec.accumulation is not Accumulation.REFUSED:
        raise ValueError(f"method {name}: a method with parts steps several optimisers on every batch, which gradient "
                         "accumulation cannot split: declare accumulation=Accumulation.REFUSED with its note")  # fmt: skip
    stages = spec.stages or one_stage(spec.parts)
    stepped = {step for stage in stages for step in stage.steps}
    unknown = stepped - {MAIN, *names}
    if unknown or not set(names) <= stepped or any(not stage.steps for stage in stages):
        raise ValueError(f"method {name}: every stage steps some of {MAIN!r} and the parts {names}, and every part "
                         f"is stepped by a stage (unknown: {sorted(unknown)})")  # fmt: skip
    if any(stage.epochs is None for stage in stages[:-1]) or stages[-1].epochs is not None:
        raise ValueError(f"method {name}: every stage but the last names the setting of its epochs; the last takes "
                         "the rest of the run")  # fmt: skip
    assert spec.sections_type is not None
    keys = fields_by_key(spec.sections_type())
    unnamed = [stage.epochs for stage in stages if stage.epochs and stage.epochs not in keys]
    if unnamed:
        raise ValueError(f"method {name}: stage lengths {unnamed} name no setting of the method")


def _sections_type(name: str, spec: MethodSpec[Any]) -> type:
    """The dataclass of the run's sections of a one-section method: one field, ``spec.section``; defined in the
    settings' module under ``<Settings>Section``, so that a run's settings pickle."""
    if spec.section is None:
        return spec.settings
    fields = [(spec.section, spec.settings, section(spec.settings, spec.section_help))]
    made = dataclasses.make_dataclass(f"{spec.settings.__name__}Section", fields)
    made.__module__ = spec.settings.__module__
    setattr(sys.modules[made.__module__], made.__qualname__, made)
    return made


def register_method(name: str, spec: MethodSpec[S]) -> Callable[[type[M]], type[M]]:
    """Class decorator: register the decorated method class under ``name`` with ``spec`` (the class is its builder,
    called as ``cls(settings, encoder, context)``, unless ``spec.build`` is set).

    Example (the shape of every method file)::

        @register_method("simclr", MethodSpec("SimCLR: ...", SimCLRSettings, section="simclr", terms=("loss_nce",)))
        class SimCLR(TwoViewMethod): ...
    """

    def add(cls: type[M]) -> type[M]:
        if not dataclasses.is_dataclass(spec.settings):
            raise TypeError(f"method {name}: its settings, {spec.settings!r}, must be a dataclass of setting() fields")
        if spec.smoke.floor is not Floor.UNTRAINED and not spec.smoke.why:
            raise ValueError(f"method {name}: a smoke run below the untrained encoder needs its reason (why)")
        build = spec.build or _class_builder(cls)
        family = cls.__module__.split(".")[-2] if cls.__module__.count(".") >= 2 else ""
        complete = dataclasses.replace(spec, name=name, build=build, family=family)
        registered = dataclasses.replace(complete, sections_type=_sections_type(name, complete))
        _check_parts(name, registered)
        METHODS.register(name)(registered)
        return cls

    return add


def _class_builder(cls: type[Method]) -> Callable[[Any, nn.Module, BuildContext], Method]:  # the class's own S
    """A method class as its builder: every registered class takes ``(settings, encoder, context)``."""
    construct: Callable[..., Method] = cls

    def build(settings: Any, encoder: nn.Module, context: BuildContext) -> Method:
        return construct(settings, encoder, context)

    return build


def require_faiss(key: str, wanted: bool) -> None:
    """The one-line error for a setting ``key`` that asks for FAISS (``wanted``) when FAISS is not installed."""
    if wanted and not faiss_available():
        raise ConfigError(f"{key}=faiss needs FAISS: pip install 'invprop[faiss]' (or faiss-gpu)")


def create_method(
    name: str,
    encoder: nn.Module,
    num_samples: int,
    embedding_dim: int,
    *,
    total_steps: int | None = None,
    labels: Tensor | None = None,
    features: Callable[[nn.Module], Tensor] | None = None,
    in_channels: int = 3,
    mean: tuple[float, ...] = (),
    std: tuple[float, ...] = (),
    image_size: int | None = None,
    **sections: Mapping[str, Any],
) -> Method:
    """A registered method for your own training loop, its settings from ``sections`` over the method's defaults.

    Args:
        name: a registered method (``invp``, ``simclr``, ``byol``, ``instance-classifier``, ...; ``invprop methods``
            lists them).
        encoder: any module mapping a batch of images to (B, ``embedding_dim``) embeddings.
        num_samples: N, the training images (indices run over ``[0, N)``).
        embedding_dim: D.
        total_steps: the optimiser steps your run will take: the momentum schedules of BYOL and MoCo follow it
            (they refuse to be built without it) and read each batch's ``step``.
        labels: (N,) labels (-1 unknown), for InvP's logged diagnostics only.
        features: ``features(encoder) -> (N, D)`` embeddings of your training images, not augmented, for the
            clustering methods (DeepCluster, PCL) at the start of each epoch.
        in_channels, mean, std: your images' channels and normalisation (colorization needs them).
        image_size: your images' side (the reconstruction methods build their decoders for it).
        sections: the method's settings sections as mappings, e.g. ``loss={"temperature": 0.2}``.

    Example:
        >>> import torch
        >>> from invprop.methods import Batch
        >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
        >>> method = create_method("invp", encoder, num_samples=100, embedding_dim=16, loss={"n_background": 50})
        >>> out = method.training_step(Batch.of(torch.arange(8), torch.randn(8, 1, 8, 8), epoch=40))
        >>> out.loss.backward(); method.after_step([out])  # after the optimiser step: neighbour refresh, then EMA
        >>> sorted(out.terms)[:2]
        ['loss_ins', 'loss_inv']
    """
    spec = METHODS.get(name)
    settings = spec.new_sections()
    merge(settings, sections)
    check(settings)
    context = BuildContext(num_samples, embedding_dim, False, in_channels, tuple(mean), tuple(std), total_steps, labels,
                           features, image_size=image_size)  # fmt: skip
    return spec.create(settings, encoder, context)


__all__ = [
    "METHODS",
    "Accumulation",
    "Ablation",
    "Cell",
    "Curve",
    "FigureInputs",
    "Floor",
    "GridFigure",
    "ImageRows",
    "MethodSpec",
    "Recipe",
    "SmokeRun",
    "Torchrun",
    "Variant",
    "create_method",
    "register_method",
    "require_faiss",
]
