"""The settings of an optimiser: one optimiser's recipe (:class:`OptimizerSettings`: its kind, learning rate and
batch rule, weight decay and schedule) and the run's ``optim`` section (:class:`OptimSettings`: the main optimiser's
recipe plus the run-level keys, the batch and the accumulation). A method that steps several optimisers (a
discriminator beside its encoder) keeps each further optimiser's recipe in a section of its own of
:class:`OptimizerSettings` (:class:`invprop.methods.Part`)."""

from __future__ import annotations

from dataclasses import dataclass

from invprop.optimizers import GRADIENT_CLIPS, OPTIMIZERS
from invprop.schedules import LR_SCALINGS, SCHEDULES
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, FRACTION, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, Range, setting

#: Which recipe a preset brings: each method's own published one, or the dataset preset's one for every method.
RECIPES = ("own", "shared")


@dataclass
class OptimizerSettings:
    """One optimiser's recipe: its kind, learning rate and batch rule, weight decay and schedule."""

    optimizer: str = setting(
        "sgd", "optimiser: sgd (with momentum), lars (the variant of Barlow Twins' and VICReg's code), adamw (the ViT "
        "recipes'), adam (with L2 weight decay)", choices=OPTIMIZERS,
    )  # fmt: skip
    lr: float = setting(0.03, "peak learning rate at optim.reference_batch, scaled to the batch by optim.lr_scaling",
                        bounds=POSITIVE)  # fmt: skip
    lr_scaling: str = setting(
        "none", "how the lr follows the global batch: none (as given), linear (x batch / reference_batch) or sqrt",
        choices=LR_SCALINGS,
    )  # fmt: skip
    reference_batch: int = setting(256, "the batch optim.lr is given for", bounds=AT_LEAST_ONE)
    momentum: float = setting(0.9, "momentum of SGD and LARS", bounds=UNIT_INTERVAL)
    nesterov: bool = setting(False, "SGD with Nesterov momentum")
    betas: list[float] = setting(None, "Adam's and AdamW's beta1 and beta2", bounds=UNIT_INTERVAL,
                                 factory=lambda: [0.9, 0.999])  # fmt: skip
    layer_decay: float = setting(
        1.0, "timm backbones: layer-wise learning-rate decay, each layer's rate times this per layer from the top "
        "(the ViT fine-tuning recipes: 0.65-0.75; 1 = none)", bounds=Range(gt=0, le=1),
    )  # fmt: skip
    weight_decay: float = setting(5e-4, "weight decay (at the first step, when optim.final_weight_decay is set)",
                                  bounds=NON_NEGATIVE)  # fmt: skip
    final_weight_decay: float | None = setting(
        None, "the weight decay at the last step, reached from optim.weight_decay on a cosine over the run's steps "
        "(DINO's and iBOT's 0.04 -> 0.4); null: constant", bounds=NON_NEGATIVE,
    )  # fmt: skip
    clip_grad: float = setting(
        0.0, "before each step, the gradients' norm clipped to this (DINO's, iBOT's and MSN's 3.0), as "
        "optim.clip_scope says; 0: off", bounds=NON_NEGATIVE,
    )  # fmt: skip
    clip_scope: str = setting(
        "tensor", "how optim.clip_grad applies: tensor (each parameter tensor's norm: DINO's, iBOT's) or global (the "
        "norm of all gradients together: MSN's)", choices=GRADIENT_CLIPS,
    )  # fmt: skip
    exclude_norm_and_bias: bool = setting(
        True, "biases and norm layers' parameters (and a ViT's position embeddings and class token) get no weight "
        "decay, nor LARS's adaptation",
    )  # fmt: skip
    norm_bias_lr_scale: float = setting(
        1.0, "the lr of biases and norm layers relative to the rest's (Barlow Twins: 0.0048 / 0.2); with "
        "optim.exclude_norm_and_bias", bounds=POSITIVE,
    )  # fmt: skip
    lars_eta: float = setting(0.001, "LARS's trust coefficient eta", bounds=POSITIVE)
    lars_clip: bool = setting(
        False, "LARS: no layer's lr above the global lr (LARC's clip; solo-learn's CIFAR recipes)"
    )
    schedule: str = setting("cosine", "learning-rate schedule", choices=SCHEDULES)
    final_lr: float = setting(0.0, "the share of the peak lr the schedule decays to", bounds=UNIT_INTERVAL)
    warmup_epochs: int = setting(
        0, "linear warm-up epochs of the recipe; a shorter run warms up for at most optim.warmup_share of its epochs",
        bounds=NON_NEGATIVE,
    )  # fmt: skip
    warmup_share: float = setting(0.1, "the largest share of the run the warm-up takes (1: no cap)", bounds=FRACTION)
    warmup_start_lr: float = setting(0.0, "the lr the warm-up starts from", bounds=NON_NEGATIVE)
    milestones: list[int] | None = setting(None, "epochs at which the step schedule decays (default: "
                                           "optim.milestone_shares of the epochs)")  # fmt: skip
    milestone_shares: list[float] | None = setting(
        None, "shares of the epochs at which the step schedule decays (default: 50%, 75%, 87.5%)", bounds=FRACTION
    )
    gamma: float = setting(0.1, "decay factor of the step schedule", bounds=POSITIVE)


@dataclass
class OptimSettings(OptimizerSettings):
    """The ``optim`` section: the main optimiser's recipe -- a method's (its spec's ``recipes``, applied by the
    presets unless ``recipe`` is ``shared``) -- and the run's batch."""

    recipe: str = setting(
        "own", "which recipe the preset brings: own (each method's published optimiser, lr and batch rule, weight "
        "decay and warm-up: invprop presets --keys --method NAME) or shared (the dataset preset's SGD for every method, "
        "the one-recipe comparison)", choices=RECIPES,
    )  # fmt: skip
    fixed_lr_modules: list[str] = setting(
        None, "the method's modules (attribute names) whose lr stays at the peak: no warm-up, no decay (SimSiam's "
        "predictor)", factory=list,
    )  # fmt: skip
    batch_size: int = setting(
        128, "images per batch, summed over all processes of a distributed run (the global batch)", bounds=AT_LEAST_TWO
    )
    accumulate: int = setting(
        1, "batches per optimiser step (gradient accumulation: the step's batch is accumulate x batch_size, and the lr "
        "scales with it); methods whose loss needs the whole batch at once refuse it", bounds=AT_LEAST_ONE,
    )  # fmt: skip


def warmup_epochs_of(optim: OptimizerSettings, epochs: int) -> int:
    """The warm-up a run of ``epochs`` gets: the recipe's, at most ``warmup_share`` of the run.

    Example:
        >>> settings = OptimSettings(warmup_epochs=10)
        >>> warmup_epochs_of(settings, 1000), warmup_epochs_of(settings, 30)
        (10, 3)
    """
    return min(optim.warmup_epochs, int(epochs * optim.warmup_share))


__all__ = ["RECIPES", "OptimSettings", "OptimizerSettings", "warmup_epochs_of"]
