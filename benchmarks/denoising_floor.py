"""How far a denoising autoencoder's reconstruction loss can fall, and how much of it a filter that sees only a 3x3
neighbourhood already gets: the measured reason why, on CIFAR-10 at the compare's scale, the denoising autoencoder's
features do not beat its untrained encoder (docs/results.md, issue 31).

On training views drawn as the compare draws them (the cifar preset's crops and colours, masking noise nu = 0.25), it
prints the mean reconstruction cross-entropy (Vincent et al., 2008, L_H) of:
- the clean image itself (the loss's floor: the pixels' own binary entropy, which no network can remove);
- a local filter: each destroyed component replaced by the mean of the kept components of the same channel in its
  3x3 neighbourhood (the global mean where none is kept), the others kept as they are;
- the per-position mean image of the batch (no use of the input at all).

Use:  python benchmarks/denoising_floor.py [--images 2560] [--noise 0.25]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

from invprop.core.reconstruction_losses import reconstruction_cross_entropy
from invprop.data.masks import masking_noise
from invprop.data.splits import build_datasets

#: Keeps the logits of pixels at exactly 0 or 1 finite.
EPS = 1e-4


def logits_of(pixels: torch.Tensor) -> torch.Tensor:
    clipped = pixels.clamp(EPS, 1 - EPS)
    return torch.log(clipped) - torch.log1p(-clipped)


def local_filter(corrupted: torch.Tensor, destroyed: torch.Tensor) -> torch.Tensor:
    """Destroyed components <- the mean of the kept ones of the same channel in their 3x3 neighbourhood."""
    kept = (~destroyed).float()
    channels = corrupted.shape[1]
    kernel = torch.ones(channels, 1, 3, 3)
    sums = F.conv2d(corrupted * kept, kernel, padding=1, groups=channels)
    counts = F.conv2d(kept, kernel, padding=1, groups=channels)
    global_mean = (corrupted * kept).sum() / kept.sum()
    filled = torch.where(counts > 0, sums / counts.clamp(min=1), global_mean)
    return torch.where(destroyed, filled, corrupted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2560)
    parser.add_argument("--noise", type=float, default=0.25)
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = build_datasets("cifar10", root="~/.cache/invprop/data", pipeline="tensor", cache_dir=None,
                            subset=10000)  # fmt: skip
    assert splits.train_images is not None and splits.batch_augment is not None
    images = splits.train_images.images[: args.images].float() / 255
    views = splits.batch_augment(images, torch.Generator().manual_seed(0))
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    clean = (views * std + mean).clamp(0, 1)
    destroyed = masking_noise(tuple(clean.shape), args.noise)
    corrupted = clean.masked_fill(destroyed, 0.0)
    rows = {
        "clean image (the floor)": reconstruction_cross_entropy(logits_of(clean), clean),
        "3x3 local filter": reconstruction_cross_entropy(logits_of(local_filter(corrupted, destroyed)), clean),
        "batch mean image": reconstruction_cross_entropy(
            logits_of(clean.mean(0, keepdim=True).expand_as(clean)), clean
        ),
    }
    print(f"{args.images} CIFAR-10 training views, masking noise {args.noise}: reconstruction cross-entropy")
    for name, value in rows.items():
        print(f"  {name:28s} {float(value):.4f}")


if __name__ == "__main__":
    main()
