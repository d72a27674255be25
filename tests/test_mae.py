"""MAE as a method: the loss is the decoder's error on the hidden patches of the image batch against their
normalised pixels, the encoder sees only the visible ones, a convnet is refused in one line, and the presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.config import preset
from invprop.core.masked_modelling import masked_patch_loss, normalised_targets, patchify
from invprop.core.token_masks import keep_tokens, random_token_mask
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.reconstruction.mae import MAE
from invprop.models import ModelSettings, encoder_from
from invprop.models.vit_tokens import embed_patches, encode_tokens
from invprop.settings import merge

SIDE = 16


def _mae(**options) -> MAE:
    torch.manual_seed(0)
    spec = METHODS.get("mae")
    settings = spec.new_sections()
    merge(settings, {"mae": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, **options}})
    encoder = encoder_from(ModelSettings(backbone="timm:test_vit", patch_size=4, head="linear"), 3, SIDE)
    method = spec.create(settings, encoder, BuildContext(40, 8, image_size=SIDE))
    assert isinstance(method, MAE)
    return method.eval()  # no dropout: the loss can be recomputed


@pytest.mark.parametrize("norm_pix", [True, False])
def test_the_loss_is_the_decoders_error_on_the_hidden_patches_from_the_visible_ones(norm_pix: bool) -> None:
    method = _mae(norm_pix_loss=norm_pix)
    images = torch.randn(2, 3, SIDE, SIDE)
    torch.manual_seed(5)
    out = method.training_step(Batch(torch.arange(2), (images,)))
    torch.manual_seed(5)
    mask = random_token_mask(2, 16, 0.75)
    net = method.encoder.backbone.net
    with torch.no_grad():
        embedded = embed_patches(net, images)
        encoded = encode_tokens(net, torch.cat([embedded.prefix, keep_tokens(embedded.patches, mask.keep)], dim=1))
        targets = patchify(images, 4)
        targets = normalised_targets(targets) if norm_pix else targets
        expected = masked_patch_loss(method.decoder(encoded, mask.restore), targets, mask.hidden)
    assert encoded.shape[1] == 1 + 4  # the class token and the 4 visible patches of 16
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_the_hidden_patches_pixels_do_not_reach_the_encoder() -> None:
    method = _mae()
    images = torch.randn(1, 3, SIDE, SIDE)
    torch.manual_seed(7)
    mask = random_token_mask(1, 16, 0.75)
    changed = images.clone()
    for token in mask.hidden[0].nonzero().flatten().tolist():
        r, c = divmod(token, 4)
        changed[0, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 100.0
    captured: list[torch.Tensor] = []
    method.decoder.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    for batch in (images, changed):
        torch.manual_seed(7)
        method.training_step(Batch(torch.arange(1), (batch,)))
    assert torch.allclose(captured[0], captured[1])


def test_a_convnet_backbone_is_refused_in_one_line() -> None:
    spec = METHODS.get("mae")
    encoder = encoder_from(ModelSettings(backbone="digits_convnet", head="linear"), 1)
    with pytest.raises(ConfigError, match="needs a timm Vision Transformer"):
        spec.create(spec.new_sections(), encoder, BuildContext(40, 128, in_channels=1, image_size=8))
    assert isinstance(encoder, nn.Module)


def test_the_presets_bring_the_published_recipes_and_a_vit() -> None:
    imagenet = preset("imagenet", "mae")
    assert (imagenet.optim.optimizer, imagenet.optim.lr, imagenet.optim.betas) == ("adamw", 1.5e-4, [0.9, 0.95])
    assert (imagenet.optim.weight_decay, imagenet.optim.warmup_epochs) == (0.05, 40)
    assert imagenet.model.backbone == "timm:vit_base_patch16_224" and imagenet.mae.mask_ratio == 0.75
    cifar = preset("cifar10", "mae")
    assert (cifar.optim.lr, cifar.optim.exclude_norm_and_bias) == (2e-4, False)
    assert (cifar.model.backbone, cifar.model.patch_size) == ("timm:vit_small_patch16_224", 4)


def test_it_learns_to_restore_the_hidden_patches_of_a_fixed_batch() -> None:
    method = _mae(norm_pix_loss=False).train()
    optimizer = torch.optim.AdamW(method.parameters(), lr=2e-3)
    torch.manual_seed(0)  # smooth images: a hidden patch can be told from its neighbours
    images = nn.functional.interpolate(torch.randn(4, 3, 2, 2), size=SIDE, mode="bilinear", align_corners=True)
    losses = []
    for step in range(16):
        torch.manual_seed(step % 2)  # two masks, alternating
        out = method.training_step(Batch(torch.arange(4), (images,)))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-2:]) < 0.5 * sum(losses[:2]), losses
