"""MSN as a method: its loss recomputed from the same dropped tokens (anchors: the second view and the small crops;
target: the first view, whole, through the momentum encoder), the tokens an anchor keeps, the target's linear
momentum, the prototypes' optimiser group, refusals, and the presets."""

from __future__ import annotations

import pytest
import torch

from invprop.config import preset
from invprop.core.masked_siamese import mean_entropy_penalty, msn_cross_entropy, msn_targets, prototype_scores
from invprop.core.momentum import linear_momentum
from invprop.core.token_masks import random_token_mask
from invprop.engine.optimizer import parameter_groups
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext
from invprop.methods.distillation.msn import MSN
from invprop.models import ModelSettings, encoder_from
from invprop.models.vit_tokens import MaskedPatches
from invprop.settings import merge

D, K = 6, 7


def _msn(**options) -> MSN:
    torch.manual_seed(0)
    spec = METHODS.get("msn")
    settings = spec.new_sections()
    merge(settings, {"msn": {"prototypes": K, **options}})
    model = ModelSettings(backbone="timm:test_vit", patch_size=2, head="linear", embedding_dim=D)
    method = spec.create(settings, encoder_from(model, 1, 8), BuildContext(40, D, total_steps=10, image_size=8))
    assert isinstance(method, MSN)
    return method


def test_the_loss_is_the_masked_anchors_against_the_whole_first_views_targets_plus_the_mean_entropy_term() -> None:
    method = _msn(memax_weight=0.5, patch_drop=0.25)
    method.eval()
    views = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # two views of 4 images
    small = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(2))  # two small crops of each
    torch.manual_seed(5)
    out = method.training_step(Batch(torch.arange(4), (views, small), epoch=1))
    torch.manual_seed(5)
    keep_view, keep_small = random_token_mask(4, 16, 0.25).keep, random_token_mask(8, 4, 0.25).keep
    with torch.no_grad():
        anchors = torch.cat([
            method.encoder(views[4:], tokens=MaskedPatches(keep=keep_view)).embedding,
            method.encoder(small, tokens=MaskedPatches(keep=keep_small)).embedding,
        ])  # fmt: skip
        scores = prototype_scores(anchors, method.prototypes.weight)
        targets = msn_targets(prototype_scores(method.target(views[:4]), method.prototypes.weight), 0.1, 0.25, 3)
        cross_entropy = msn_cross_entropy(scores, targets.repeat(3, 1), 0.1)
        memax = mean_entropy_penalty(torch.softmax(scores / 0.1, dim=1).mean(dim=0))
    assert torch.allclose(out.loss, cross_entropy + 0.5 * memax, atol=1e-5)
    assert float(out.terms["loss_memax"]) == pytest.approx(float(memax), rel=1e-5)


def test_an_anchor_goes_through_the_blocks_with_its_kept_tokens_only_and_the_target_with_all() -> None:
    method = _msn(patch_drop=0.5)
    seen: dict[str, list[int]] = {"student": [], "target": []}
    for name, encoder in (("student", method.encoder), ("target", method.target)):
        encoder.backbone.net.blocks.register_forward_hook(
            lambda module, args, out, name=name: seen[name].append(args[0].shape[1])
        )
    method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 8, 8),), epoch=1))
    prefix = int(method.encoder.backbone.net.num_prefix_tokens)
    assert seen == {"student": [prefix + 8], "target": [prefix + 16]}  # 8 of the 16 patches; all of them


def test_the_target_follows_on_a_linear_momentum_schedule() -> None:
    method = _msn(base_momentum=0.9, final_momentum=1.0)
    before = [p.detach().clone() for p in method.target.parameters()]
    out = method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 8, 8),), epoch=1, step=4))
    out.loss.backward()
    with torch.no_grad():
        for p in method.encoder.parameters():
            if p.grad is not None:
                p.sub_(0.5 * p.grad)
    method.after_step([out])
    m = linear_momentum(0.9, 4, 10, 1.0)
    assert out.terms["momentum"] == pytest.approx(0.94)
    for t, b, s in zip(method.target.parameters(), before, method.encoder.parameters(), strict=True):
        assert torch.allclose(t, m * b + (1 - m) * s, atol=1e-6)


def test_the_prototypes_learn_in_a_group_of_their_own_without_weight_decay() -> None:
    method = _msn()
    groups = parameter_groups(method, 0.04)
    own = [g for g in groups if any(p is method.prototypes.weight for p in g["params"])]
    assert len(own) == 1 and own[0]["params"] == [method.prototypes.weight] and own[0]["weight_decay"] == 0.0
    out = method.training_step(Batch(torch.arange(4), (torch.randn(8, 1, 8, 8),), epoch=1))
    out.loss.backward()
    assert method.prototypes.weight.grad is not None and method.prototypes.weight.grad.abs().sum() > 0


def test_a_convnet_is_refused_in_one_line() -> None:
    spec = METHODS.get("msn")
    convnet = encoder_from(ModelSettings(backbone="digits_convnet", head="linear", embedding_dim=D), 1)
    with pytest.raises(ConfigError, match="method msn works on an image's patch tokens") as error:
        spec.create(spec.new_sections(), convnet, BuildContext(40, D, total_steps=10))
    assert "\n" not in str(error.value)


def test_the_presets_bring_the_published_recipe_and_a_vit() -> None:
    imagenet = preset("imagenet", "msn")
    o = imagenet.optim
    assert (o.optimizer, o.lr, o.lr_scaling, o.warmup_epochs, o.warmup_start_lr) == ("adamw", 1e-3, "none", 15, 2e-4)
    assert (o.weight_decay, o.final_weight_decay, o.clip_grad, o.clip_scope) == (0.04, 0.4, 3.0, "global")
    assert (imagenet.model.head, imagenet.msn.prototypes, imagenet.msn.patch_drop) == ("mlp3_bn_gelu", 1024, 0.15)
    digits = preset("digits", "msn")
    assert (digits.model.backbone, digits.model.patch_size) == ("timm:vit_tiny_patch16_224", 2)
