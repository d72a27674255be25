"""I-JEPA's predictor (Assran et al., 2023, Sec. 3; the authors' ``VisionTransformerPredictor``): a narrow ViT that
takes the context encoder's tokens and, for each target block, a mask token at each of the block's positions, and
predicts the target encoder's representation of those positions."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from invprop.core.token_masks import keep_tokens
from invprop.models.timm_backbone import import_timm
from invprop.models.vit_tokens import sincos_position_embedding

#: The LayerNorm epsilon of the authors' ViTs (``partial(nn.LayerNorm, eps=1e-6)``).
LAYER_NORM_EPS = 1e-6
#: The standard deviation of the authors' truncated-normal initialisation (``init_std``).
INIT_STD = 0.02


class JEPAPredictor(nn.Module):
    """(B, K_c, D) context tokens at their positions -> (M B, K_t, D) predictions at each target block's positions.

    Args:
        width: D, the encoder's token width.
        rows, cols: the patch grid (fixed sine-cosine position embeddings over it).
        dim, depth, heads: the predictor's width, blocks and attention heads (I-JEPA ViT-H/14: 384, 12, the
            encoder's 16).
        mlp_ratio: the blocks' MLP width over ``dim`` (4).
    """

    position: Tensor  # (rows x cols, dim) fixed position embeddings

    def __init__(
        self, width: int, rows: int, cols: int, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        timm = import_timm()
        self.embed = nn.Linear(width, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.register_buffer("position", sincos_position_embedding(rows, cols, dim), persistent=False)
        norm = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)
        block = timm.models.vision_transformer.Block
        self.blocks = nn.Sequential(
            *[block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
        )
        self.norm = norm(dim)
        self.project = nn.Linear(dim, width)
        # The authors' initialisation: truncated normal linear layers and mask token, zero biases, LayerNorms at 1
        # and 0, and each block's output projections divided by sqrt(2 x its depth) (``fix_init_weight``).
        nn.init.trunc_normal_(self.mask_token, std=INIT_STD)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            layer: Any  # a timm Block
            for depth_index, layer in enumerate(self.blocks, start=1):
                layer.attn.proj.weight.div_(math.sqrt(2.0 * depth_index))
                layer.mlp.fc2.weight.div_(math.sqrt(2.0 * depth_index))

    def forward(self, context: Tensor, context_index: Tensor, target_index: Tensor) -> Tensor:
        """``context`` (B, K_c, D) encoded tokens at ``context_index`` (B, K_c); ``target_index`` (M, B, K_t) the
        positions of each target block. Returns (M B, K_t, D), block-major (block m's rows ``[m B, (m + 1) B)``)."""
        blocks, b, k_t = target_index.shape
        position = self.position.to(context.dtype).expand(b, -1, -1)
        x = self.embed(context) + keep_tokens(position, context_index)
        targets = torch.cat([keep_tokens(position, index) for index in target_index])  # (M B, K_t, dim)
        queries = self.mask_token.to(x.dtype) + targets
        x = torch.cat([x.repeat(blocks, 1, 1), queries], dim=1)
        x = self.norm(self.blocks(x))
        return self.project(x[:, -k_t:])


__all__ = ["INIT_STD", "JEPAPredictor", "LAYER_NORM_EPS"]
