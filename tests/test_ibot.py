"""iBOT as a method: its loss against DINO's class-token loss plus the masked patch-token loss recomputed from the
same masks; the teacher on whole views; both centres after a step; the mask token's gradient; the separate patch
layer; refusals; and the presets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from invprop.config import preset
from invprop.core.self_distillation import (
    balanced_teacher_distribution,
    dino_loss,
    koleo_loss,
    masked_token_loss,
    teacher_distribution,
)
from invprop.core.token_masks import block_masks
from invprop.errors import ConfigError
from invprop.methods import METHODS, Batch, BuildContext, StepOutput
from invprop.methods.distillation.ibot import IBOT
from invprop.models import ModelSettings, encoder_from
from invprop.models.vit_tokens import MaskedPatches
from invprop.settings import merge

D, K = 6, 5


def _ibot(**options) -> IBOT:
    torch.manual_seed(0)
    spec = METHODS.get("ibot")
    settings = spec.new_sections()
    merge(settings, {"ibot": {"prototypes": K, "patch_prototypes": K, "base_momentum": 0.9, "final_momentum": 0.9,
                              "warmup_teacher_temperature_epochs": 0, **options}})  # fmt: skip
    model = ModelSettings(backbone="timm:test_vit", patch_size=2, head="mlp3_gelu", hidden_dim=8, embedding_dim=D)
    method = spec.create(settings, encoder_from(model, 1, 8), BuildContext(40, D, image_size=8))
    assert isinstance(method, IBOT)
    return method


def _images(seed: int = 1) -> torch.Tensor:
    return torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(seed))  # two views of 4 images


def _step(method: IBOT, images: torch.Tensor, epoch: int = 3) -> StepOutput:
    out = method.training_step(Batch(torch.arange(4), (images,), epoch))
    method.zero_grad()
    out.loss.backward()
    with torch.no_grad():
        for p in method.parameters():
            if p.grad is not None:
                p.sub_(0.5 * p.grad)
    method.after_step([out])
    return out


def _scores(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(F.normalize(x, dim=-1))


def test_the_loss_is_dinos_on_the_masked_views_plus_the_hidden_tokens_against_the_teachers_whole_views() -> None:
    method = _ibot(mask_probability=1.0, mim_weight=0.7)
    method.eval()  # the same numbers in both passes
    method.center.copy_(torch.randn(K))
    method.patch_center.copy_(torch.randn(K))
    images = _images()
    torch.manual_seed(5)
    out = method.training_step(Batch(torch.arange(4), (images,), epoch=3))
    torch.manual_seed(5)
    hidden = block_masks(8, 4, 4, 1.0, (0.1, 0.5), (0.3, 1 / 0.3))
    with torch.no_grad():
        masked = method.encoder(images, tokens=MaskedPatches(hidden, method.mask_token.embedding))
        whole = method.teacher(images, tokens=MaskedPatches())
        student = _scores(method.last_layer, masked.embedding).split(4)
        probs = [
            teacher_distribution(t, method.center, 0.07)
            for t in _scores(method.teacher_last_layer, whole.embedding).split(4)
        ]
        patch_probs = teacher_distribution(_scores(method.teacher_last_layer, whole.patches), method.patch_center, 0.07)
        student_patches = _scores(method.last_layer, masked.patches)
        mim = [masked_token_loss(s, t, h, 0.1) for s, t, h in
               zip(student_patches.split(4), patch_probs.split(4), hidden.split(4))]  # fmt: skip
        expected = dino_loss(list(student), probs, 0.1) + 0.7 * (mim[0] + mim[1]) / 2
    assert hidden.any(dim=1).all()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert float(out.terms["masked_share"]) == pytest.approx(float(hidden.float().mean()))


def test_dinov2s_options_balance_the_class_and_hidden_patch_targets_and_add_koleo_on_the_class_tokens() -> None:
    method = _ibot(mask_probability=1.0, centering="sinkhorn", koleo_weight=0.2)
    method.eval()
    images = _images()
    torch.manual_seed(6)
    out = method.training_step(Batch(torch.arange(4), (images,), epoch=3))
    torch.manual_seed(6)
    hidden = block_masks(8, 4, 4, 1.0, (0.1, 0.5), (0.3, 1 / 0.3))
    with torch.no_grad():
        masked = method.encoder(images, tokens=MaskedPatches(hidden, method.mask_token.embedding))
        whole = method.teacher(images, tokens=MaskedPatches())
        teacher = _scores(method.teacher_last_layer, whole.embedding)
        cls = dino_loss(list(_scores(method.last_layer, masked.embedding).split(4)),
                        list(balanced_teacher_distribution(teacher, method.center, 0.07).split(4)), 0.1)  # fmt: skip
        patch_targets = torch.zeros(8, 16, K)
        patch_targets[hidden] = balanced_teacher_distribution(
            _scores(method.teacher_last_layer, whole.patches)[hidden], method.patch_center, 0.07
        )
        student_patches = _scores(method.last_layer, masked.patches)
        mim = sum(masked_token_loss(s, t, h, 0.1) for s, t, h in
                  zip(student_patches.split(4), patch_targets.split(4), hidden.split(4))) / 2  # fmt: skip
        koleo = koleo_loss(masked.features[:4]) + koleo_loss(masked.features[4:])
    assert float(out.terms["loss_koleo"]) == pytest.approx(0.2 * float(koleo), rel=1e-5)
    assert torch.allclose(out.loss, cls + mim + 0.2 * koleo, atol=1e-5)


@pytest.mark.parametrize("centering", ["softmax", "sinkhorn"])
def test_without_masks_the_patch_loss_and_the_masked_share_are_zero(centering: str) -> None:
    method = _ibot(mask_probability=0.0, centering=centering)  # (Sinkhorn over no hidden token: nothing to balance)
    out = method.training_step(Batch(torch.arange(4), (_images(),), epoch=3))
    assert float(out.terms["loss_mim"]) == 0.0 and float(out.terms["masked_share"]) == 0.0
    assert float(out.terms["loss_cls"]) > 0 and torch.isfinite(out.loss)


def test_after_a_step_both_centres_move_to_the_teachers_mean_outputs_patch_tokens_averaged_per_image_first() -> None:
    method = _ibot(center_momentum=0.8, patch_center_momentum=0.6)
    images = _images()
    with torch.no_grad():
        whole = method.teacher(images, tokens=MaskedPatches())
        mean = _scores(method.teacher_last_layer, whole.embedding).mean(dim=0)
        patch_mean = _scores(method.teacher_last_layer, whole.patches).mean(dim=1).mean(dim=0)
    teacher_before = [p.detach().clone() for p in method.teacher.parameters()]
    _step(method, images)
    assert torch.allclose(method.center, 0.2 * mean, atol=1e-6)
    assert torch.allclose(method.patch_center, 0.4 * patch_mean, atol=1e-6)
    for t, before, s in zip(method.teacher.parameters(), teacher_before, method.encoder.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * before + 0.1 * s, atol=1e-6)


def test_the_mask_token_learns_from_the_hidden_patches() -> None:
    method = _ibot(mask_probability=1.0)
    before = method.mask_token.embedding.detach().clone()
    _step(method, _images())
    assert method.mask_token.embedding.grad is not None and method.mask_token.embedding.grad.abs().sum() > 0
    assert not torch.equal(method.mask_token.embedding, before)


def test_a_separate_patch_layer_scores_the_patch_tokens_when_the_head_is_not_shared() -> None:
    method = _ibot(shared_head=False, patch_prototypes=7, mask_probability=1.0)
    assert method.patch_layer is not None and method.patch_center.shape == (7,)
    _step(method, _images())
    assert method.patch_layer.direction.grad is not None
    assert method.patch_center.abs().sum() > 0


def test_a_shared_head_with_other_patch_prototypes_and_a_convnet_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="ibot.patch_prototypes .* must equal ibot.prototypes"):
        _ibot(patch_prototypes=7)
    spec = METHODS.get("ibot")
    convnet = encoder_from(ModelSettings(backbone="digits_convnet", head="linear", embedding_dim=D), 1)
    with pytest.raises(ConfigError, match="method ibot works on an image's patch tokens") as error:
        spec.create(spec.new_sections(), convnet, BuildContext(40, D, total_steps=10))
    assert "\n" not in str(error.value)


def test_the_presets_bring_the_published_recipe_and_a_vit() -> None:
    imagenet = preset("imagenet", "ibot")
    assert (imagenet.optim.optimizer, imagenet.optim.lr, imagenet.optim.weight_decay) == ("adamw", 5e-4, 0.04)
    assert (imagenet.optim.final_weight_decay, imagenet.optim.clip_grad) == (0.4, 3.0)
    assert (imagenet.model.backbone, imagenet.ibot.prototypes, imagenet.ibot.norm_last_layer) == (
        "timm:vit_small_patch16_224", 8192, False)  # fmt: skip
    cifar = preset("cifar10", "ibot")
    assert (cifar.model.backbone, cifar.model.patch_size) == ("timm:vit_tiny_patch16_224", 4)
    assert cifar.optim.optimizer == "adamw"
