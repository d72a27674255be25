"""I-JEPA as a method: its loss recomputed from the same blocks (the context encoder on the context tokens alone, the
predictor, the target encoder's normalised tokens of each block), the predictor's blocks kept apart, the frozen
head, the target's linear momentum, refusals, and the presets."""

from __future__ import annotations

import pytest
import torch

from invprop.config import preset
from invprop.core.joint_embedding import jepa_loss, target_layer_norm
from invprop.core.momentum import linear_momentum
from invprop.core.token_masks import keep_tokens, multi_block_masks
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.distillation.ijepa import IJEPA
from invprop.models import ModelSettings, encoder_from
from invprop.models.jepa_predictor import JEPAPredictor
from invprop.models.vit_tokens import MaskedPatches
from invprop.settings import merge

D = 6


def _ijepa(**options) -> IJEPA:
    torch.manual_seed(0)
    spec = METHODS.get("ijepa")
    settings = spec.new_sections()
    merge(settings, {"ijepa": {"min_keep": 2, "predictor_dim": 16, "predictor_depth": 1, **options}})
    model = ModelSettings(backbone="timm:test_vit", patch_size=4, head="linear", embedding_dim=D)
    encoder = encoder_from(model, 1, 32)
    spec.freeze_unused(encoder)
    method = spec.create(settings, encoder, BuildContext(40, D, total_steps=10, image_size=32))
    assert isinstance(method, IJEPA)
    return method


def _images() -> torch.Tensor:
    return torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def test_the_loss_is_the_predictors_huber_distance_to_the_targets_normalised_tokens_of_each_block() -> None:
    method = _ijepa()
    method.eval()
    images = _images()
    torch.manual_seed(5)
    out = method.training_step(Batch(torch.arange(3), (images,), epoch=1))
    torch.manual_seed(5)
    masks = multi_block_masks(3, 8, 8, 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 2)
    with torch.no_grad():
        context = method.encoder(images, tokens=MaskedPatches(keep=masks.context, head=False)).patches
        whole = target_layer_norm(method.target(images, tokens=MaskedPatches(head=False)).patches)
        targets = torch.cat([keep_tokens(whole, index) for index in masks.targets])
        expected = jepa_loss(method.predictor(context, masks.context, masks.targets), targets)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert out.terms["context_tokens"] == masks.context.shape[1]
    assert out.terms["target_tokens"] == masks.targets.shape[2]


def test_the_context_encoder_sees_the_context_tokens_alone_and_the_head_stays_frozen() -> None:
    method = _ijepa()
    seen: list[int] = []
    method.encoder.backbone.net.blocks.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    out = method.training_step(Batch(torch.arange(3), (_images(),), epoch=1))
    prefix = int(method.encoder.backbone.net.num_prefix_tokens)
    assert seen == [prefix + int(out.terms["context_tokens"])] and seen[0] < prefix + 64
    out.loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in method.encoder.head.parameters())
    assert method.encoder.backbone.net.patch_embed.proj.weight.grad is not None


def test_the_predictor_predicts_each_target_block_apart_from_the_others() -> None:
    torch.manual_seed(0)
    predictor = JEPAPredictor(width=8, rows=4, cols=4, dim=16, depth=2, heads=2).eval()
    context, index = torch.randn(2, 5, 8), torch.tensor([[0, 1, 2, 4, 5], [3, 6, 7, 9, 12]])
    first = torch.tensor([[[10, 11], [13, 14]], [[0, 1], [2, 3]]])  # two blocks, two images
    second = first.clone()
    second[1] = torch.tensor([[8, 12], [5, 9]])  # another second block
    a, b = predictor(context, index, first), predictor(context, index, second)
    assert a.shape == (4, 2, 8)
    assert torch.allclose(a[:2], b[:2], atol=1e-6) and not torch.allclose(a[2:], b[2:], atol=1e-4)
    shifted = predictor(context, index + 1, first)  # the context at other positions: other predictions
    assert not torch.allclose(a, shifted, atol=1e-4)


def test_the_target_follows_on_a_linear_momentum_schedule() -> None:
    method = _ijepa(base_momentum=0.9)
    before = [p.detach().clone() for p in method.target.backbone.parameters()]
    out = method.training_step(Batch(torch.arange(3), (_images(),), epoch=1, step=5))
    out.loss.backward()
    with torch.no_grad():
        for p in method.encoder.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    method.after_step([out])
    m = linear_momentum(0.9, 5, 10, 1.0)
    for t, b, s in zip(method.target.backbone.parameters(), before, method.encoder.backbone.parameters(), strict=True):
        assert torch.allclose(t, m * b + (1 - m) * s, atol=1e-6)


def test_blocks_that_cannot_keep_min_keep_tokens_and_a_convnet_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="lower ijepa.min_keep below") as error:
        _ijepa(min_keep=10)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="must divide into its"):
        _ijepa(predictor_dim=18)
    spec = METHODS.get("ijepa")
    convnet = encoder_from(ModelSettings(backbone="digits_convnet", head="linear", embedding_dim=D), 1)
    with pytest.raises(ConfigError, match="method ijepa works on an image's patch tokens"):
        spec.create(spec.new_sections(), convnet, BuildContext(40, D, total_steps=10, image_size=8))


def test_the_presets_bring_the_published_recipe_and_a_vit() -> None:
    o = preset("imagenet", "ijepa").optim
    assert (o.optimizer, o.lr, o.lr_scaling, o.warmup_epochs, o.warmup_start_lr) == ("adamw", 1e-3, "none", 40, 2e-4)
    assert (o.weight_decay, o.final_weight_decay, o.clip_grad) == (0.04, 0.4, 0.0)
    cifar = preset("cifar10", "ijepa")
    assert (cifar.model.backbone, cifar.model.patch_size, cifar.ijepa.min_keep) == ("timm:vit_tiny_patch16_224", 4, 2)


def test_the_predictor_learns_the_target_tokens_of_a_fixed_batch() -> None:
    method = _ijepa(base_momentum=1.0).train()  # a fixed target encoder: fixed targets
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=2e-3)
    torch.manual_seed(0)  # smooth images: a block's tokens can be told from its neighbours'
    images = torch.nn.functional.interpolate(torch.randn(3, 1, 4, 4), size=32, mode="bilinear", align_corners=True)
    losses = []
    for step in range(30):
        torch.manual_seed(step % 2)  # two sets of blocks, alternating
        out = method.training_step(Batch(torch.arange(3), (images,), epoch=1, step=step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.after_step([out])
        losses.append(float(out.loss.detach()))
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2]), losses  # measured: 0.44 to about 0.27
