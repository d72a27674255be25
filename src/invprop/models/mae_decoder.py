"""MAE's decoder (He et al., 2022, Sec. 3; the authors' ``models_mae.py``): the encoded visible tokens projected to
the decoder's width, a shared learned mask token in every hidden place, fixed sine-cosine position embeddings,
Transformer blocks, and a linear layer to each patch's pixels."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from invprop.core.token_masks import keep_tokens
from invprop.models.timm_backbone import import_timm
from invprop.models.vit_tokens import sincos_position_embedding

#: The decoder's LayerNorm epsilon (the authors' ``partial(nn.LayerNorm, eps=1e-6)``).
LAYER_NORM_EPS = 1e-6
#: The standard deviation of the mask token's normal initialisation (the authors' ``normal_(std=.02)``).
MASK_TOKEN_STD = 0.02


class MAEDecoder(nn.Module):
    """(B, P + K, D) encoded prefix and visible tokens -> (B, N, p p C) pixel predictions of every patch.

    Args:
        width: D, the encoder's token width.
        rows, cols: the patch grid (N = rows x cols).
        pixels: p p C, the values of one patch.
        prefix: P, the encoder's prefix tokens (class and register tokens), carried through the blocks and dropped.
        dim, depth, heads: the decoder's width, blocks and attention heads (MAE: 512, 8, 16).
        mlp_ratio: the blocks' MLP width over ``dim`` (MAE: 4).
    """

    position: Tensor  # (1, P + N, dim) fixed position embeddings, the prefix's zero

    def __init__(
        self, width: int, rows: int, cols: int, pixels: int, prefix: int, dim: int, depth: int, heads: int,
        mlp_ratio: float = 4.0,
    ) -> None:  # fmt: skip
        super().__init__()
        timm = import_timm()
        self.prefix = prefix
        self.embed = nn.Linear(width, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=MASK_TOKEN_STD)
        position = torch.cat([torch.zeros(prefix, dim), sincos_position_embedding(rows, cols, dim)])
        self.register_buffer("position", position.unsqueeze(0), persistent=False)  # fixed: rebuilt, not saved
        norm = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)
        block = timm.models.vision_transformer.Block
        self.blocks = nn.Sequential(
            *[block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
        )
        self.norm = norm(dim)
        self.predict = nn.Linear(dim, pixels)
        for module in self.modules():  # the authors' _init_weights: Xavier-uniform linear layers, zero biases
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, encoded: Tensor, restore: Tensor) -> Tensor:
        """``encoded`` (B, P + K, D); ``restore`` (B, N), the permutation that puts [kept; hidden] tokens back in
        image order (:class:`invprop.core.token_masks.TokenMask`)."""
        x = self.embed(encoded)
        prefix, visible = x[:, : self.prefix], x[:, self.prefix :]
        b, n = restore.shape
        hidden = self.mask_token.to(x.dtype).expand(b, n - visible.shape[1], -1)
        patches = keep_tokens(torch.cat([visible, hidden], dim=1), restore)
        x = torch.cat([prefix, patches], dim=1) + self.position.to(x.dtype)
        x = self.norm(self.blocks(x))
        return self.predict(x[:, self.prefix :])


__all__ = ["LAYER_NORM_EPS", "MASK_TOKEN_STD", "MAEDecoder"]
