"""I-JEPA (Assran et al., 2023) as a training method: ``method: ijepa``.

For each image, four target blocks and one large context block of its patch grid are drawn
(:func:`invprop.core.token_masks.multi_block_masks`: the context without the targets' tokens); the backbone, a timm
ViT, encodes the context block's tokens alone; a narrow ViT, the predictor
(:class:`invprop.models.jepa_predictor.JEPAPredictor`), predicts from them, with a mask token at each position of a
target block, the target encoder's tokens there -- the momentum copy of the backbone on the whole image, each token
layer-normalised (:func:`invprop.core.joint_embedding.target_layer_norm`) --; the loss is their Huber distance
(:func:`invprop.core.joint_embedding.jepa_loss`). The target encoder follows on a linear momentum schedule. No loss
reads ``model.head``, which stays frozen.

The default recipe is the authors' ViT-H/14 config (AdamW, lr warmed up from 2e-4 to 1e-3 over 40 epochs whatever
the batch, then a cosine to 1e-6; weight decay 0.04 to 0.4 on a cosine; no gradient clipping); no CIFAR recipe is
published, and CIFAR and digits take it too.

The ViT is built as I-JEPA's, without a class token (``model.class_token=false``): the backbone's feature, which
evaluation and export read, is the mean of its patch tokens after the final norm, as the authors evaluate it.

Differences from the authors' code: the encoder keeps timm's learned position embeddings (I-JEPA's are fixed
sine-cosine ones, as its predictor's here) and timm's exemption of them from weight decay; the views come from the dataset's augmentation (I-JEPA: a random
resized crop of 30-100% alone); the masks are drawn in the training step, from torch's generator, not in the data
loader's workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from invprop.core.joint_embedding import jepa_loss, target_layer_norm
from invprop.core.momentum import ema_update_, frozen_copy, linear_momentum
from invprop.core.token_masks import block_shape, keep_tokens, multi_block_masks
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.spec import Accumulation, Curve, Floor, MethodSpec, Recipe, SmokeRun, Torchrun, register_method
from invprop.methods.two_views import momentum_schedule
from invprop.models.jepa_predictor import JEPAPredictor
from invprop.models.vit_tokens import MaskedPatches, patch_grid, patch_side, vision_transformer
from invprop.settings import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, Reference, setting


@dataclass
class IJEPASettings:
    """The ``ijepa`` section."""

    targets: int = setting(4, "M, the target blocks per image", bounds=AT_LEAST_ONE)
    target_scale: list[float] = setting(None, "[low, high], a target block's share of the patch grid",
                                        bounds=FRACTION, factory=lambda: [0.15, 0.2])  # fmt: skip
    target_aspect: list[float] = setting(None, "[low, high], a target block's height over its width",
                                         bounds=POSITIVE, factory=lambda: [0.75, 1.5])  # fmt: skip
    context_scale: list[float] = setting(None, "[low, high], the square context block's share of the grid",
                                         bounds=FRACTION, factory=lambda: [0.85, 1.0])  # fmt: skip
    min_keep: int = setting(10, "a block keeps more tokens than this (a context block is redrawn until it does)",
                            bounds=NON_NEGATIVE)  # fmt: skip
    predictor_dim: int = setting(384, "the predictor's token width", bounds=AT_LEAST_ONE)
    predictor_depth: int = setting(12, "the predictor's Transformer blocks", bounds=AT_LEAST_ONE)
    predictor_heads: int | None = setting(None, "the predictor's attention heads; null: the encoder's",
                                          bounds=AT_LEAST_ONE)  # fmt: skip
    base_momentum: float = setting(0.996, "the target encoder's momentum at the first step", bounds=FRACTION)
    final_momentum: float = setting(1.0, "the target encoder's momentum at the last step (linear)", bounds=FRACTION)


_ASSRAN = "Assran et al. (2023), I-JEPA"
_CONFIG = f"{_ASSRAN}, the authors' configs/in1k_vith14_ep300.yaml"
_NO_CIFAR = "no I-JEPA recipe or setting for CIFAR is published (solo-learn and lightly have none)"
_GRID = "scaled with the patch grid: 10 of the ViT-H/14 grid's 256 tokens"
_SMALL_PREDICTOR = ("scaled down with ViT-Tiny (192 wide): I-JEPA's predictor is 384 wide, 0.3 of its ViT-H encoder's "
                    "1,280")  # fmt: skip
SPEC = MethodSpec(
    "I-JEPA: from a context block, a predictor regresses a momentum encoder's tokens of target blocks "
    "(Assran et al., 2023)",
    IJEPASettings,
    section="ijepa",
    section_help="I-JEPA's blocks, predictor and target encoder",
    recipes={
        "*": Recipe(
            f"{_CONFIG} (AdamW, lr warmed up from 2e-4 to 1e-3 over 40 epochs -- 13% of its 300, so a shorter run warms "
            "up for 14% of it at most --, whatever the batch, then a cosine to 1e-6; weight decay 0.04 to 0.4 on a "
            "cosine but on biases and 1-D parameters; no gradient clipping)",
            {
                "optimizer": "adamw",
                "lr": 1e-3,
                "lr_scaling": "none",
                "weight_decay": 0.04,
                "final_weight_decay": 0.4,
                "exclude_norm_and_bias": True,
                "schedule": "cosine",
                "warmup_epochs": 40,
                "warmup_share": 0.14,
                "warmup_start_lr": 2e-4,
                "final_lr": 1e-6 / 1e-3,
                "clip_grad": 0.0,
            },
        ),
    },
    presets={
        "*": {"model": {"backbone": "timm:vit_huge_patch14_224", "head": "linear", "class_token": False}},
        "cifar10": {
            "model": {"backbone": "timm:vit_tiny_patch16_224", "patch_size": 4},
            "ijepa": {"min_keep": 2, "predictor_dim": 96, "predictor_depth": 4},
        },
        "digits": {
            "model": {"backbone": "timm:vit_tiny_patch16_224", "patch_size": 2},
            "ijepa": {"min_keep": 0, "predictor_dim": 96, "predictor_depth": 2, "base_momentum": 0.99},
        },
    },
    references={
        "*": {
            "ijepa.targets": Reference(4, f"{_CONFIG} (num_pred_masks)"),
            "ijepa.target_scale": Reference([0.15, 0.2], f"{_CONFIG} (pred_mask_scale)"),
            "ijepa.target_aspect": Reference([0.75, 1.5], f"{_CONFIG} (aspect_ratio)"),
            "ijepa.context_scale": Reference([0.85, 1.0], f"{_CONFIG} (enc_mask_scale)"),
            "ijepa.min_keep": Reference(10, f"{_CONFIG} (min_keep)"),
            "ijepa.predictor_dim": Reference(384, f"{_CONFIG} (pred_emb_dim)"),
            "ijepa.predictor_depth": Reference(12, f"{_CONFIG} (pred_depth)"),
            "ijepa.base_momentum": Reference(0.996, f"{_CONFIG} (ema start)"),
            "ijepa.final_momentum": Reference(1.0, f"{_CONFIG} (ema end)"),
            "model.backbone": Reference("timm:vit_huge_patch14_224", f"{_CONFIG} (model_name vit_huge, patch 14)"),
            "model.class_token": Reference(
                False,
                f"{_ASSRAN}, the authors' src/models/vision_transformer.py (no "
                "class token; evaluation averages the patch tokens)",
            ),
        },
    },
    deviations={
        "cifar10": {
            "model.backbone": "ViT-Tiny with 4x4 patches of the 32x32 images (64 tokens), the cifar10-vit preset's; "
            + _NO_CIFAR,
            "ijepa.min_keep": _GRID + ", to the 8 x 8 grid's 64 (a 3 x 3 target block must pass)",
            "ijepa.predictor_dim": _SMALL_PREDICTOR,
            "ijepa.predictor_depth": "a shallower predictor for CPU runs; not measured against 12",
        },
        "digits": {
            "model.backbone": "ViT-Tiny with 2x2 patches of the 8x8 digits (16 patches), the digits ViT row's",
            "ijepa.min_keep": _GRID + ", to the 4 x 4 grid's 16 (blocks of one or two tokens)",
            "ijepa.predictor_dim": _SMALL_PREDICTOR,
            "ijepa.predictor_depth": "a shallow predictor for the 16 tokens of the 8x8 digits",
            "ijepa.base_momentum": "short digits runs: the target must follow within a few hundred steps",
        },
    },
    headline=("ijepa.targets", "ijepa.context_scale", "model.backbone"),
    terms=("loss_jepa", "context_tokens", "target_tokens", "momentum"),
    curves=(
        Curve("I-JEPA's Huber distance to the target tokens", ("loss_jepa",)),
        Curve("tokens of the context and of each target block", ("context_tokens", "target_tokens"), "tokens"),
    ),
    # The method trains no projection: its kNN reads the backbone.
    # Not in the default compare: it needs a ViT (minutes an epoch on a CPU), as the cifar10-vit compare gives.
    compare=False,
    smoke=SmokeRun(
        metric="knn_backbone_top1",
        floor=Floor.FINITE,
        why="on the 8x8 digits ViT-Tiny/2 has a 4 x 4 patch grid, where I-JEPA's target blocks hold 1-2 tokens and "
        "its context 4-5: in 3 epochs with the published recipe the backbone kNN fell to 0.2489 (untrained 0.3356) "
        "as the features collapsed (RankMe 1.15-1.5) while the loss fell from 0.37 to 0.19; with the lr scaled to "
        "the batch (6.25e-5) it reached 0.3311 in 4 epochs, RankMe 1.87 (this project's 2-core machine, "
        "2026-12-06); tests/test_ijepa.py checks that the predictor learns the target tokens",
    ),
    trains_head=False,
    accumulation=Accumulation.RUNS,
    accumulation_note="each chunk draws its own blocks",
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws the blocks of its own images, from a stream of its own",
)


#: The draws at which :func:`_check_blocks` tries the block shapes.
_CHECKED_DRAWS = 101


def _check_blocks(settings: IJEPASettings, grid: int) -> None:
    """A one-line error unless every target and context block shape a draw can give on the ``grid`` x ``grid``
    patches keeps more than ``ijepa.min_keep`` tokens (the masks would be redrawn forever)."""
    o = settings
    kinds = (("target", o.target_scale, o.target_aspect), ("context", o.context_scale, [1.0, 1.0]))
    for draw in torch.linspace(0, 1, _CHECKED_DRAWS).tolist():
        for kind, scale, aspect in kinds:
            h, w = block_shape(grid, grid, draw, (scale[0], scale[1]), (aspect[0], aspect[1]))
            if h * w <= o.min_keep:
                raise ConfigError(f"on the {grid} x {grid} patch grid a {kind} block can be {h} x {w}, no more than "
                                  f"ijepa.min_keep={o.min_keep} tokens: lower ijepa.min_keep below {h * w} or raise "
                                  f"ijepa.{kind}_scale")  # fmt: skip


@register_method("ijepa", SPEC)
class IJEPA(Method):
    """Prediction of target blocks' representations from a context block (Assran et al., 2023, Sec. 3).

    Args:
        settings: the ``ijepa`` section.
        encoder: a timm ViT backbone (+ a head that takes no part).
        context: the image side (the predictor's position embeddings are built for its patch grid), the planned
            steps (the target's momentum) and the process group (the predictor's gradients averaged).
    """

    views = 1

    def __init__(self, settings: IJEPASettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        for key in ("target_scale", "target_aspect", "context_scale"):
            low, high = getattr(settings, key)
            if low > high:
                raise ConfigError(f"ijepa.{key}=[{low}, {high}] has its low end above its high end: swap them")
        self.options = settings
        net = vision_transformer(encoder, "ijepa")
        if context.image_size is None:
            raise ConfigError("method ijepa builds its predictor for the image side: give BuildContext.image_size")
        heads = settings.predictor_heads or int(net.blocks[0].attn.num_heads)
        if settings.predictor_dim % heads or settings.predictor_dim % 4:
            raise ConfigError(f"ijepa.predictor_dim={settings.predictor_dim} must divide into its {heads} attention "
                              "heads and by 4 (its sine-cosine positions): choose a multiple of both")  # fmt: skip
        grid = context.image_size // patch_side(net)
        _check_blocks(settings, grid)
        self.predictor = JEPAPredictor(int(net.embed_dim), grid, grid, settings.predictor_dim,
                                       settings.predictor_depth, heads)  # fmt: skip
        self.momentum = momentum_schedule(
            "ijepa.base_momentum", settings.base_momentum, settings.final_momentum, context, linear_momentum
        )
        self.target = frozen_copy(encoder)

    def shared_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def training_step(self, batch: Batch) -> StepOutput:
        o = self.options
        images = self.views_of(batch)
        rows, cols = patch_grid(vision_transformer(self.encoder, "ijepa"), images)
        masks = multi_block_masks(batch.size, rows, cols, o.targets, (o.target_scale[0], o.target_scale[1]),
                                  (o.target_aspect[0], o.target_aspect[1]), (o.context_scale[0], o.context_scale[1]),
                                  o.min_keep)  # fmt: skip
        context_index, target_index = masks.context.to(images.device), masks.targets.to(images.device)
        with torch.no_grad():
            whole = target_layer_norm(self.target(images, tokens=MaskedPatches(head=False)).patches)
            targets = torch.cat([keep_tokens(whole, index) for index in target_index])
        context = self.encode_tokens(images, MaskedPatches(keep=context_index, head=False)).patches
        predictions = self.predictor(context, context_index, target_index)
        loss = jepa_loss(predictions, targets)
        terms: dict[str, Tensor | float] = {
            "loss_jepa": loss.detach(),
            "context_tokens": float(context_index.shape[1]),
            "target_tokens": float(target_index.shape[2]),
            "momentum": self.momentum(batch.step),
        }
        return StepOutput(loss, terms, terms["momentum"])

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        if outputs:  # once per optimiser step: the target encoder follows
            ema_update_(self.target, self.encoder, outputs[-1].update)


__all__ = ["IJEPA", "IJEPASettings", "SPEC"]
