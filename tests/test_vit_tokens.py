"""The token path of a timm ViT: all tokens through it equal timm's own forward; a masked pass replaces exactly the
hidden patches' embeddings; an encoder's token pass runs its head on the pooled feature and every patch token; the
fixed sine-cosine position embeddings against MAE's formula written out; the MAE decoder puts every token back in
its place."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invprop.core.token_masks import keep_tokens, random_token_mask
from invprop.errors import ConfigError
from invprop.models import EncodedTokens, ModelSettings, encoder_from
from invprop.models.mae_decoder import MAEDecoder
from invprop.models.vit_tokens import (
    MaskedPatches,
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


def test_the_encoders_token_pass_gives_its_embedding_and_the_head_on_each_patch_token() -> None:
    torch.manual_seed(0)
    settings = ModelSettings(backbone="timm:test_vit", patch_size=4, head="mlp3_gelu", hidden_dim=12, embedding_dim=5)
    encoder = encoder_from(settings, 3, 16).eval()
    images = torch.randn(2, 3, 16, 16)
    out = encoder(images, tokens=MaskedPatches())
    assert isinstance(out, EncodedTokens) and out.patches.shape == (2, 16, 5)
    assert torch.allclose(out.embedding, encoder(images), atol=1e-5)
    net = encoder.backbone.net
    tokens = net.forward_features(images)[:, net.num_prefix_tokens :]
    for i in range(2):
        for j in (0, 7, 15):
            assert torch.allclose(out.patches[i, j], encoder.head(tokens[i, j][None])[0], atol=1e-5)


def test_a_masked_pass_is_the_whole_pass_with_the_hidden_patch_embeddings_replaced_by_the_mask_token() -> None:
    encoder = _vit()
    net = vision_transformer(encoder, "ibot")
    images = torch.randn(2, 3, 16, 16)
    hidden = torch.zeros(2, 16, dtype=torch.bool)
    hidden[0, [1, 5]], hidden[1, 9] = True, True
    token = torch.randn(net.embed_dim)
    captured: list[torch.Tensor] = []
    handle = net.patch_embed.register_forward_hook(lambda module, args, out: captured.append(out))
    masked = encoder(images, tokens=MaskedPatches(hidden, token)).patches
    handle.remove()
    patches = captured[0].reshape(2, 16, -1).clone()  # the true embeddings, then those of the hidden ones replaced
    patches[hidden] = token
    prefix = embed_patches(net, images).prefix
    position = net.pos_embed[:, net.num_prefix_tokens :]
    expected = encode_tokens(net, torch.cat([prefix, patches + position], dim=1))[:, net.num_prefix_tokens :]
    assert torch.allclose(masked, encoder.head(expected.reshape(32, -1)).reshape(2, 16, -1), atol=1e-5)
    whole = encoder(images, tokens=MaskedPatches()).patches
    assert not torch.allclose(masked[0, 1], whole[0, 1], atol=1e-3)


def test_a_pass_with_kept_tokens_runs_the_blocks_on_the_prefix_and_those_patches_alone() -> None:
    encoder = _vit()
    net = vision_transformer(encoder, "msn")
    images = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[3, 0, 9], [15, 4, 7]])
    out = encoder(images, tokens=MaskedPatches(keep=keep))
    embedded = embed_patches(net, images)
    expected = encode_tokens(net, torch.cat([embedded.prefix, keep_tokens(embedded.patches, keep)], dim=1))
    prefix = net.num_prefix_tokens
    assert out.patches.shape == (2, 3, encoder.head.out_features)
    assert torch.allclose(out.patches, encoder.head(expected[:, prefix:].reshape(6, -1)).reshape(2, 3, -1), atol=1e-5)
    assert torch.allclose(out.embedding, encoder.head(net.forward_head(expected, pre_logits=True)), atol=1e-5)


def test_without_the_patch_head_a_batchnorm_head_in_training_sees_one_row_per_image_as_a_plain_forward() -> None:
    torch.manual_seed(0)
    settings = ModelSettings(
        backbone="timm:test_vit", patch_size=4, head="mlp3_bn_gelu", hidden_dim=12, embedding_dim=5
    )
    encoder = encoder_from(settings, 3, 16).train()
    images = torch.randn(4, 3, 16, 16)
    every = torch.arange(16).expand(4, 16)
    out = encoder(images, tokens=MaskedPatches(keep=every, patch_head=False))
    assert torch.allclose(out.embedding, encoder(images), atol=1e-5)  # the same batch statistics
    assert out.patches.shape == (4, 16, encoder.backbone.feature_dim)  # the backbone's tokens, not mapped
    joint = encoder(images, tokens=MaskedPatches(keep=every))  # with the patch head: other statistics
    assert not torch.allclose(joint.embedding, out.embedding, atol=1e-3)


def test_a_mask_without_its_token_or_of_the_wrong_size_is_refused() -> None:
    encoder = _vit()
    with pytest.raises(ValueError, match="needs the mask token"):
        encoder(torch.randn(1, 3, 16, 16), tokens=MaskedPatches(torch.zeros(1, 16, dtype=torch.bool)))
    with pytest.raises(ValueError, match="a mask of shape"):
        encoder(torch.randn(1, 3, 16, 16), tokens=MaskedPatches(torch.zeros(1, 9, dtype=torch.bool), torch.zeros(8)))


def test_a_backbone_without_patch_tokens_is_refused_in_one_line() -> None:
    encoder = encoder_from(ModelSettings(backbone="digits_convnet", head="linear"), 1)
    with pytest.raises(ConfigError, match="has no patch tokens") as error:
        encoder(torch.randn(2, 1, 8, 8), tokens=MaskedPatches())
    assert "\n" not in str(error.value)


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
