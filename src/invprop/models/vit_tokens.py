"""The token path of a timm Vision Transformer, for methods that encode only some of an image's patches (MAE) or
replace some by a mask token and read every patch token (iBOT): patch tokens with their position embeddings, the
prefix tokens (class and register tokens), and the blocks over any subset of them. Works on the ``net`` of a
:class:`invprop.models.timm_backbone.TimmBackbone` built from a timm ``VisionTransformer``."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from invprop.core.token_masks import keep_tokens
from invprop.errors import ConfigError


class EmbeddedPatches(NamedTuple):
    """An image batch embedded: ``prefix`` (B, P, D) class/register tokens and ``patches`` (B, N, D) patch tokens,
    both with their position embeddings added."""

    prefix: Tensor
    patches: Tensor


class MaskedPatches(NamedTuple):
    """What an encoder's token pass hides: ``hidden`` (B, N) bool, True where a patch's embedding is replaced by
    ``token`` (D,), the mask token (iBOT); ``keep`` (B, K), the indices of the only patch tokens that go through the
    blocks, the rest dropped after the position embeddings (MSN's patch dropping, I-JEPA's context); None: nothing
    hidden, nothing dropped. ``head`` False: the encoder gives the backbone's pooled feature and tokens, its head
    unused (I-JEPA); ``patch_head`` False: the head maps the pooled feature alone (MSN: its BatchNorm head sees one
    row per image, as in a plain forward)."""

    hidden: Tensor | None = None
    token: Tensor | None = None
    keep: Tensor | None = None
    head: bool = True
    patch_head: bool = True


class TokenFeatures(NamedTuple):
    """A ViT's pass over every token: ``pooled`` (B, F), the numbers its ``forward`` gives on the same input, and
    ``patches`` (B, N, F), the patch tokens after the final norm."""

    pooled: Tensor
    patches: Tensor


class MaskToken(nn.Module):
    """The learnable embedding that takes a hidden patch's place before the position embeddings (Zhou et al., 2022,
    iBOT's ``masked_embed``, zeros at the start)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(width))


#: The attributes of a timm ``VisionTransformer`` the token path uses.
_VIT_PARTS = ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm", "num_prefix_tokens",
              "forward_head")  # fmt: skip


def is_vision_transformer(net: Any) -> bool:
    """Whether ``net`` has the parts of a timm ``VisionTransformer`` the token path uses."""
    return net is not None and all(hasattr(net, name) for name in _VIT_PARTS)


def vision_transformer(encoder: nn.Module, method: str) -> Any:
    """The timm ``VisionTransformer`` inside ``encoder`` (its ``backbone.net``); a one-line error naming ``method``
    when the backbone is not one."""
    net = getattr(getattr(encoder, "backbone", None), "net", None)
    if not is_vision_transformer(net):
        raise ConfigError(f"method {method} works on an image's patch tokens and needs a timm Vision Transformer: "
                          "set model.backbone=timm:vit_tiny_patch16_224 (or another timm:vit_*) and "
                          "model.patch_size")  # fmt: skip
    return net


def token_features(net: Any, images: Tensor, masked: MaskedPatches = MaskedPatches()) -> TokenFeatures:
    """``net``'s pass over the tokens of ``images`` (timm's ``forward_features`` and ``forward_head``): the
    embeddings of the patches ``masked.hidden`` replaced by ``masked.token`` before the position embeddings are
    added (iBOT's masked view), and only the patch tokens ``masked.keep`` kept after them (MSN's); ``patches`` holds
    the tokens that went through the blocks, in ``keep``'s order."""
    patches = net.patch_embed(images)
    if masked.hidden is not None:
        if masked.token is None:
            raise ValueError("a mask over the patches needs the mask token that replaces them: give "
                             "MaskedPatches(hidden, token)")  # fmt: skip
        # (B, N, D), or (B, h, w, D) from a ViT built with timm's dynamic_img_size
        if masked.hidden.shape != (patches.shape[0], patches[0, ..., 0].numel()):
            raise ValueError(f"a mask of shape {tuple(masked.hidden.shape)} does not cover the patches of these images "
                             f"{tuple(patches.shape[:-1])}: give one entry per patch, (B, N)")  # fmt: skip
        hidden = masked.hidden.reshape(*patches.shape[:-1], 1)
        patches = torch.where(hidden, masked.token.to(patches.dtype), patches)
    tokens = net._pos_embed(patches)
    prefix = int(net.num_prefix_tokens)
    if masked.keep is not None:
        tokens = torch.cat([tokens[:, :prefix], keep_tokens(tokens[:, prefix:], masked.keep)], dim=1)
    tokens = encode_tokens(net, net.patch_drop(tokens))
    return TokenFeatures(net.forward_head(tokens, pre_logits=True), tokens[:, prefix:])


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
    "MaskToken",
    "MaskedPatches",
    "TokenFeatures",
    "is_vision_transformer",
    "token_features",
    "embed_patches",
    "encode_tokens",
    "patch_grid",
    "patch_side",
    "sincos_position_embedding",
    "vision_transformer",
]
