"""The token path of a timm ViT: all tokens through it equal timm's own forward; the fixed sine-cosine position
embeddings against MAE's formula written out; the MAE decoder puts every token back in its place."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invprop.core.token_masks import keep_tokens, random_token_mask
from invprop.errors import ConfigError
from invprop.models import ModelSettings, encoder_from
from invprop.models.mae_decoder import MAEDecoder
from invprop.models.vit_tokens import (
    embed_patches,
    encode_tokens,
    patch_grid,
    sincos_position_embedding,
    vision_transformer,
)


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return encoder_from(ModelSettings(backbone="timm:test_vit", patch_size=4, head="linear"), 3, 16).eval()


def test_every_token_through_the_token_path_gives_timms_own_features() -> None:
    encoder = _vit()
    net = vision_transformer(encoder, "mae")
    images = torch.randn(2, 3, 16, 16)
    embedded = embed_patches(net, images)
    assert embedded.patches.shape[1] == 16 and patch_grid(net, images) == (4, 4)
    ours = encode_tokens(net, torch.cat([embedded.prefix, embedded.patches], dim=1))
    assert torch.allclose(ours, net.forward_features(images), atol=1e-5)


def test_a_backbone_that_is_not_a_vit_is_refused_in_one_line() -> None:
    encoder = encoder_from(ModelSettings(backbone="digits_convnet", head="linear"), 1)
    with pytest.raises(ConfigError, match="method mae .* needs a timm Vision Transformer") as error:
        vision_transformer(encoder, "mae")
    assert "\n" not in str(error.value)


def test_the_sine_cosine_embedding_follows_maes_formula_columns_first() -> None:
    rows, cols, dim = 2, 3, 8
    table = sincos_position_embedding(rows, cols, dim)
    quarter = dim // 4
    for r in range(rows):
        for c in range(cols):
            expected = []
            for position in (c, r):  # the first half encodes the column (the authors' grid[0] is the width)
                angles = [position / 10000 ** (k / quarter) for k in range(quarter)]
                expected += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
            assert table[r * cols + c].tolist() == pytest.approx(expected, abs=1e-6)


def test_the_decoder_puts_each_encoded_token_back_in_its_place_and_fills_the_rest_with_the_mask_token() -> None:
    torch.manual_seed(0)
    decoder = MAEDecoder(width=6, rows=2, cols=2, pixels=3, prefix=1, dim=8, depth=1, heads=2)
    captured: dict[str, torch.Tensor] = {}
    decoder.blocks.register_forward_hook(lambda module, args, out: captured.update(x=args[0]))
    encoded = torch.randn(2, 1 + 2, 6)  # one class token, two visible tokens
    mask = random_token_mask(2, 4, 0.5)
    out = decoder(encoded, mask.restore)
    assert out.shape == (2, 4, 3)
    x = captured["x"] - decoder.position
    embedded = decoder.embed(encoded)
    for b in range(2):
        for slot, token in enumerate(mask.keep[b].tolist()):
            assert torch.allclose(x[b, 1 + token], embedded[b, 1 + slot], atol=1e-6)
        for token in mask.hidden[b].nonzero().flatten().tolist():
            assert torch.allclose(x[b, 1 + token], decoder.mask_token[0, 0], atol=1e-6)
    assert torch.allclose(keep_tokens(x[:, 1:], mask.keep), embedded[:, 1:], atol=1e-6)
