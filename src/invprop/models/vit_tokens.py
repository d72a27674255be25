"""The token path of a timm Vision Transformer, for methods that encode only some of an image's patches (MAE):
patch tokens with their position embeddings, the prefix tokens (class and register tokens), and the blocks over any
subset of them. Works on the ``net`` of a :class:`invprop.models.timm_backbone.TimmBackbone` built from a timm
``VisionTransformer``."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from invprop.errors import ConfigError


class EmbeddedPatches(NamedTuple):
    """An image batch embedded: ``prefix`` (B, P, D) class/register tokens and ``patches`` (B, N, D) patch tokens,
    both with their position embeddings added."""

    prefix: Tensor
    patches: Tensor


def vision_transformer(encoder: nn.Module, method: str) -> Any:
    """The timm ``VisionTransformer`` inside ``encoder`` (its ``backbone.net``); a one-line error naming ``method``
    when the backbone is not one."""
    net = getattr(getattr(encoder, "backbone", None), "net", None)
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "num_prefix_tokens")
    if net is None or not all(hasattr(net, name) for name in needed):
        raise ConfigError(f"method {method} encodes a subset of an image's patches and needs a timm Vision "
                          "Transformer: set model.backbone=timm:vit_tiny_patch16_224 (or another timm:vit_*) and "
                          "model.patch_size")  # fmt: skip
    return net


def embed_patches(net: Any, images: Tensor) -> EmbeddedPatches:
    """The patch embedding and position embeddings of ``net`` (timm's own ``patch_embed`` and ``_pos_embed``, so an
    image side other than the model's is interpolated as timm does), split into prefix and patch tokens."""
    tokens = net._pos_embed(net.patch_embed(images))
    prefix = int(net.num_prefix_tokens)
    return EmbeddedPatches(tokens[:, :prefix], tokens[:, prefix:])


def encode_tokens(net: Any, tokens: Tensor) -> Tensor:
    """(B, T, D) tokens through ``net``'s pre-norm, blocks and final norm (its ``forward_features`` after the
    embeddings)."""
    return net.norm(net.blocks(net.norm_pre(tokens)))


def patch_grid(net: Any, images: Tensor) -> tuple[int, int]:
    """The (rows, columns) of patches ``net`` cuts ``images`` into."""
    side = patch_side(net)
    return images.shape[-2] // side, images.shape[-1] // side


def patch_side(net: Any) -> int:
    """The side of ``net``'s square patches."""
    size = net.patch_embed.patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def sincos_position_embedding(rows: int, cols: int, dim: int) -> Tensor:
    """(rows x cols, dim) fixed 2-D sine-cosine position embeddings (He et al., 2022, MAE; the authors'
    ``get_2d_sincos_pos_embed``): half the dimensions encode the column, half the row, each as sines and cosines
    of the position at frequencies ``1 / 10000^(2k / (dim / 2))``.

    Example:
        >>> sincos_position_embedding(2, 3, 8).shape
        torch.Size([6, 8])
    """
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                              indexing="ij")  # fmt: skip

    def encode(position: Tensor) -> Tensor:
        angles = position.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(col), encode(row)], dim=1).float()


__all__ = [
    "EmbeddedPatches",
    "embed_patches",
    "encode_tokens",
    "patch_grid",
    "patch_side",
    "sincos_position_embedding",
    "vision_transformer",
]
