"""Masked autoencoders (He et al., 2022) as a training method: ``method: mae``.

Each image's patches are cut at random into a visible quarter and a hidden rest
(:func:`invprop.core.token_masks.random_token_mask`); the backbone, a timm Vision Transformer, encodes the visible
patches alone (with its class token); a light decoder (:class:`invprop.models.mae_decoder.MAEDecoder`) puts a mask
token in every hidden place and predicts every patch's pixels; the loss is the mean squared error on the hidden
patches only, against each patch's normalised pixels (:mod:`invprop.core.masked_modelling`). Evaluation and export
read the backbone on whole images; ``model.head`` takes no part in training.

Differences from the authors' code: the encoder keeps timm's learned position embedding and initialisation (MAE's
encoder has a fixed sine-cosine embedding and Xavier-initialised linear layers; its decoder here has both); under
torchrun the method refuses, as its visible tokens go through the blocks outside the data-parallel wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from invprop.core.masked_modelling import masked_patch_loss, normalised_targets, patchify
from invprop.core.token_masks import keep_tokens, random_token_mask
from invprop.errors import ConfigError
from invprop.methods.citations import SOLO
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import SOLO_SCHEDULE
from invprop.methods.spec import Accumulation, Curve, Floor, MethodSpec, Recipe, SmokeRun, Torchrun, register_method
from invprop.models.mae_decoder import MAEDecoder
from invprop.models.vit_tokens import embed_patches, encode_tokens, patch_side, vision_transformer
from invprop.settings import AT_LEAST_ONE, UNIT_INTERVAL, Reference, setting


@dataclass
class MAESettings:
    """The ``mae`` section."""

    mask_ratio: float = setting(0.75, "the share of each image's patches hidden from the encoder", bounds=UNIT_INTERVAL)
    norm_pix_loss: bool = setting(True, "the targets are each patch's pixels normalised by their mean and variance")
    decoder_dim: int = setting(512, "the decoder's token width", bounds=AT_LEAST_ONE)
    decoder_depth: int = setting(8, "the decoder's Transformer blocks", bounds=AT_LEAST_ONE)
    decoder_heads: int = setting(16, "the decoder's attention heads", bounds=AT_LEAST_ONE)


_HE = "He et al. (2022), MAE"
_CODE = f"{_HE}, the authors' models_mae.py"
_PRETRAIN = f"{_HE}, the authors' PRETRAIN.md"
#: solo-learn's CIFAR MAE recipe (scripts/pretrain/cifar/mae.yaml): AdamW 2e-4 x B/256, betas (0.9, 0.95), weight
#: decay 0.05 on every parameter, its warm-up cosine schedule.
_SOLO_MAE = Recipe(
    SOLO.format("mae"),
    {**SOLO_SCHEDULE, "optimizer": "adamw", "lr": 2e-4, "betas": [0.9, 0.95], "weight_decay": 0.05,
     "exclude_norm_and_bias": False},
)  # fmt: skip
SPEC = MethodSpec(
    "MAE: a ViT encodes a random quarter of the patches, a light decoder restores the rest's pixels (He et al., 2022)",
    MAESettings,
    section="mae",
    section_help="MAE's masking, targets and decoder",
    recipes={
        "*": Recipe(
            f"{_PRETRAIN} (AdamW, base lr 1.5e-4 x B/256, betas 0.9 and 0.95, weight decay 0.05 but on biases and "
            "norms, 40 warm-up epochs, cosine to 0)",
            {
                "optimizer": "adamw",
                "lr": 1.5e-4,
                "lr_scaling": "linear",
                "reference_batch": 256,
                "betas": [0.9, 0.95],
                "weight_decay": 0.05,
                "exclude_norm_and_bias": True,
                "schedule": "cosine",
                "warmup_epochs": 40,
                "warmup_start_lr": 0.0,
                "final_lr": 0.0,
            },
        ),  # fmt: skip
        "cifar10": _SOLO_MAE,
        "digits": _SOLO_MAE,
    },
    presets={
        "*": {"model": {"backbone": "timm:vit_base_patch16_224", "head": "linear"}},
        "cifar10": {"model": {"backbone": "timm:vit_small_patch16_224", "patch_size": 4}},
        "digits": {
            "model": {"backbone": "timm:vit_tiny_patch16_224", "patch_size": 2},
            "mae": {"decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4},
        },
    },
    references={
        "*": {
            "mae.mask_ratio": Reference(0.75, f"{_PRETRAIN} (--mask_ratio)"),
            "mae.norm_pix_loss": Reference(True, f"{_PRETRAIN} (--norm_pix_loss)"),
            "mae.decoder_dim": Reference(512, f"{_CODE} (mae_vit_*_dec512d8b)"),
            "mae.decoder_depth": Reference(8, f"{_CODE} (mae_vit_*_dec512d8b)"),
            "mae.decoder_heads": Reference(16, f"{_CODE} (mae_vit_*_dec512d8b)"),
            "model.backbone": Reference("timm:vit_large_patch16_224", f"{_PRETRAIN} (ViT-L/16)"),
        },
    },
    deviations={
        "*": {"model.backbone": "ViT-B/16, the smallest of the paper's three encoders (B, L, H)"},
        "cifar10": {"model.backbone": f"{SOLO.format('mae')}: ViT-Small with 4x4 patches of the 32x32 images"},
        "digits": {
            "model.backbone": "ViT-Tiny with 2x2 patches of the 8x8 digits (16 patches), the digits ViT row's",
            "mae.decoder_dim": "a decoder scaled down with the ViT-Tiny encoder (192 wide) and 16 patches",
            "mae.decoder_depth": "a decoder scaled down with the ViT-Tiny encoder (192 wide) and 16 patches",
            "mae.decoder_heads": "a decoder scaled down with the ViT-Tiny encoder (192 wide) and 16 patches",
        },
    },
    headline=("mae.mask_ratio", "mae.norm_pix_loss", "model.backbone"),
    terms=("loss_mae",),
    curves=(Curve("MAE's squared error on the hidden patches", ("loss_mae",)),),
    smoke=SmokeRun(
        metric="knn_backbone_top1",
        floor=Floor.FINITE,
        why="MAE's features are weak for kNN until fine-tuned (lightly's ImageNet ViT-B/16 benchmark: kNN 11.2 after "
        "100 epochs, linear 46.0); on digits, ViT-Tiny's backbone kNN fell from 0.30 to 0.26 in 10 epochs while its "
        "loss fell from 0.95 to 0.62 (this project's 2-core machine, 2026-12-06); tests/test_mae.py checks that it "
        "learns to restore hidden patches",
    ),
    accumulation=Accumulation.RUNS,
    accumulation_note="each chunk draws its own masks",
    torchrun=Torchrun.REFUSED,
    torchrun_note="its visible tokens go through the ViT's blocks outside the data-parallel wrapper",
)


@register_method("mae", SPEC)
class MAE(Method):
    """Reconstruction of hidden patches from the visible ones (He et al., 2022, Sec. 3).

    Args:
        settings: the ``mae`` section.
        encoder: a timm Vision Transformer backbone (+ a head that takes no part).
        context: the image side (the decoder is built for its patch grid) and channels.
    """

    def __init__(self, settings: MAESettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings
        net = vision_transformer(encoder, "mae")
        if context.image_size is None:
            raise ConfigError("method mae builds its decoder for the image side: give BuildContext.image_size")
        side = patch_side(net)
        grid = context.image_size // side
        self.decoder = MAEDecoder(
            int(net.embed_dim), grid, grid, side * side * context.in_channels, int(net.num_prefix_tokens),
            settings.decoder_dim, settings.decoder_depth, settings.decoder_heads,
        )  # fmt: skip
        self.patch = side

    def shared_modules(self) -> list[nn.Module]:
        return [self.decoder]

    def training_step(self, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        net = vision_transformer(self.encoder, "mae")
        embedded = embed_patches(net, images)
        b, n = embedded.patches.shape[:2]
        mask = random_token_mask(b, n, self.options.mask_ratio, images.device)
        visible = keep_tokens(embedded.patches, mask.keep)
        encoded = encode_tokens(net, torch.cat([embedded.prefix, visible], dim=1))
        predictions = self.decoder(encoded, mask.restore)
        targets = patchify(images, self.patch)
        if self.options.norm_pix_loss:
            targets = normalised_targets(targets)
        loss = masked_patch_loss(predictions, targets, mask.hidden)
        return StepOutput(loss, {"loss_mae": loss.detach()})


__all__ = ["MAE", "MAESettings", "SPEC"]
