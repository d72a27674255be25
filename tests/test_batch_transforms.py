from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F

from devices import DEVICES
from invprop.data.batch_transforms import (
    BATCH_AUGMENTATIONS,
    BatchColorJitter,
    BatchGaussianBlur,
    BatchRandomGrayscale,
    BatchRandomResizedCrop,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    build_batch_augment,
    hsv_to_rgb,
    rgb_to_hsv,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset,channels,size", [("cifar", 3, 32), ("imagenet", 3, 40), ("digits", 1, 8)])
def test_presets_keep_shape_and_are_deterministic_under_a_seed(
    preset: str, channels: int, size: int, device: str
) -> None:
    x = torch.rand(16, channels, size, size).to(device)
    aug = build_batch_augment(preset, size, MEAN[:channels], STD[:channels]).to(device)

    def seeded(seed: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    a, b = aug(x, seeded(0)), aug(x, seeded(0))
    assert a.shape == x.shape and a.dtype == torch.float32 and a.device == x.device
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, seeded(1)))
    # Undoing the normalisation gives pixels in [0, 1].
    pixels = a * STD[0] + MEAN[0]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


@pytest.mark.parametrize(
    "op",
    [
        BatchRandomResizedCrop(24),
        BatchColorJitter(0.4, 0.4, 0.4, 0.4),
        BatchRandomGrayscale(0.5),
        BatchGaussianBlur(5, (0.1, 2.0), 0.5),
    ],
    ids=lambda op: type(op).__name__,
)
def test_each_op_keeps_pixels_in_range_and_shape(op: torch.nn.Module) -> None:
    x = torch.rand(32, 3, 24, 24)
    y = op(x, gen(3))
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1


def test_presets_mirror_the_per_image_registry() -> None:
    from invprop.data.transforms import AUGMENTATIONS

    assert sorted(BATCH_AUGMENTATIONS.names()) == sorted(AUGMENTATIONS.names())


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.4])
def test_colour_adjustments_equal_torchvision(factor: float) -> None:
    x = torch.rand(4, 3, 9, 9)
    f = torch.full((4,), factor)
    for ours, theirs in (
        (adjust_brightness, F.adjust_brightness),
        (adjust_contrast, F.adjust_contrast),
        (adjust_saturation, F.adjust_saturation),
    ):
        torch.testing.assert_close(ours(x, f), torch.stack([theirs(img, factor) for img in x]))
    shift = factor - 1.0  # -0.4, 0, 0.4
    torch.testing.assert_close(
        adjust_hue(x, torch.full((4,), shift)), torch.stack([F.adjust_hue(img, shift) for img in x]), atol=1e-5, rtol=0
    )


def test_hsv_round_trip() -> None:
    x = torch.rand(3, 3, 10, 10)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_blur_equals_torchvision_at_a_fixed_sigma() -> None:
    x = torch.rand(3, 3, 20, 20)
    ours = BatchGaussianBlur(7, (1.3, 1.3), p=1.0)(x, gen())
    torch.testing.assert_close(ours, torch.stack([F.gaussian_blur(img, 7, 1.3) for img in x]), atol=1e-5, rtol=0)


def test_crop_covers_identity_and_flip() -> None:
    x = torch.rand(5, 3, 16, 16)
    full = BatchRandomResizedCrop(16, scale=(1, 1), ratio=(1, 1), flip_p=0)(x, gen())
    flipped = BatchRandomResizedCrop(16, scale=(1, 1), ratio=(1, 1), flip_p=1)(x, gen())
    torch.testing.assert_close(full, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-6, rtol=0)


def test_cifar_is_the_authors_recipe_without_flip_and_cifar_flip_adds_one() -> None:
    from invprop.data.batch_transforms import BATCH_AUGMENTATIONS
    from invprop.data.transforms import build_transforms

    assert BATCH_AUGMENTATIONS.get("cifar")(32)[0].flip_p == 0.0
    assert BATCH_AUGMENTATIONS.get("cifar_flip")(32)[0].flip_p == 0.5
    for preset, flips in (("cifar", False), ("cifar_flip", True)):
        steps = build_transforms(preset, 32, (0.5,) * 3, (0.25,) * 3).train.transforms
        assert any(isinstance(t, T.RandomHorizontalFlip) for t in steps) == flips, preset


def test_crop_samples_the_drawn_box() -> None:
    # On an image linear in (row, col), bilinear resampling is exact, so each output pixel must equal the linear
    # function at the point where torchvision's crop-then-resize would sample it.
    rows = torch.arange(32, dtype=torch.float32).view(32, 1)
    cols = torch.arange(32, dtype=torch.float32).view(1, 32)
    x = (rows * 32 + cols).expand(1, 3, 32, 32) / 1024
    crop = BatchRandomResizedCrop(16, scale=(0.1, 0.5), flip_p=0)
    for seed in range(5):
        top, left, h, w = crop.crop_boxes(1, 32, 32, gen(seed), x.device)[0].tolist()
        out = crop(x, gen(seed))[0, 0]
        p = torch.arange(16, dtype=torch.float32)
        y_in = (top + (p + 0.5) * h / 16 - 0.5).clamp(0, 31).view(16, 1)
        x_in = (left + (p + 0.5) * w / 16 - 0.5).clamp(0, 31).view(1, 16)
        torch.testing.assert_close(out, (y_in * 32 + x_in) / 1024, atol=1e-5, rtol=0)


def test_crop_boxes_follow_torchvision_distribution() -> None:
    crop = BatchRandomResizedCrop(32, scale=(0.2, 1.0))
    boxes = crop.crop_boxes(20000, 32, 32, gen(1), torch.device("cpu"))
    ours_area = boxes[:, 2] * boxes[:, 3] / 1024
    torch.manual_seed(1)
    theirs = torch.tensor(
        [T.RandomResizedCrop.get_params(torch.empty(3, 32, 32), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(20000)]
    ).float()
    their_area = theirs[:, 2] * theirs[:, 3] / 1024
    assert abs(ours_area.mean() - their_area.mean()) < 0.01
    assert abs(ours_area.std() - their_area.std()) < 0.01
    ratio = boxes[:, 3] / boxes[:, 2]
    their_ratio = theirs[:, 3] / theirs[:, 2]
    assert abs(ratio.mean() - their_ratio.mean()) < 0.01
    # Boxes lie inside the image.
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 32).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= 32).all()
    # Positions are uniform over the free range, as torchvision's.
    assert abs(boxes[:, 0].mean() - theirs[:, 0].mean()) < 0.15
    assert abs(boxes[:, 1].mean() - theirs[:, 1].mean()) < 0.15


def test_jitter_factor_ranges_and_probability() -> None:
    x = torch.full((4000, 3, 2, 2), 0.5)
    out = BatchColorJitter(0.4, 0.0, 0.0, 0.0, p=1.0)(x, gen())
    factors = out[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6
    assert abs(factors.mean() - 1.0) < 0.02
    skipped = BatchColorJitter(0.4, 0.0, 0.0, 0.0, p=0.8)(x, gen())
    unchanged = (skipped == x).flatten(1).all(dim=1).float().mean()
    assert abs(unchanged - 0.2) < 0.03


def test_jitter_order_is_random_per_image() -> None:
    # Brightness then contrast differs from contrast then brightness only through clamping; with a strong
    # brightness boost both orders must appear across a batch of identical images.
    x = torch.linspace(0, 1, 16).view(1, 1, 4, 4).repeat(500, 3, 1, 1)
    out = BatchColorJitter(0.9, 0.9, 0.0, 0.0)(x, gen())
    assert out.flatten(1).unique(dim=0).shape[0] > 400
    with pytest.raises(ValueError, match="hue"):
        BatchColorJitter(0.4, 0.4, 0.4, 0.6)


def test_grayscale_probability_and_luma() -> None:
    x = torch.rand(2000, 3, 2, 2)
    out = BatchRandomGrayscale(0.2)(x, gen())
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert abs(gray.float().mean() - 0.2) < 0.03
    torch.testing.assert_close(out[gray][:, :1], F.rgb_to_grayscale(x[gray]))


def test_blur_kernel_must_be_odd() -> None:
    with pytest.raises(ValueError, match="odd"):
        BatchGaussianBlur(4, (0.1, 2.0), 0.5)
