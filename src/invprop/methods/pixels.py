"""What the reconstruction and colourisation methods share: their images in pixel units. Training batches arrive
normalised by the dataset's mean and std; the corruptions (masking noise, Gaussian noise), the colour conversions and
the reconstruction losses of the papers are written on pixels in [0, 1]."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from invprop.errors import ConfigError


class PixelSpace(nn.Module):
    """Normalised batches (B, C, H, W) to pixels in [0, 1] and back, with the training batches' normalisation (not
    saved with the weights: a checkpoint read for another dataset uses that dataset's).

    Args:
        mean, std: (C,) the normalisation of the batches.
        method: the method's name, for the error when the normalisation is unknown.

    Example:
        >>> space = PixelSpace((0.5,), (0.25,), "denoising-ae")
        >>> space.to_pixels(torch.tensor([[[[2.0, -4.0]]]])).flatten().tolist()  # clamped to [0, 1]
        [1.0, 0.0]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], method: str) -> None:
        super().__init__()
        if not mean or len(mean) != len(std):
            raise ConfigError(f"method {method} needs the batches' normalisation (BuildContext.mean and std, one value "
                              "per channel)")  # fmt: skip
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def to_pixels(self, images: Tensor) -> Tensor:
        """Normalised images -> float32 pixels in [0, 1]."""
        return (images.float() * self.std + self.mean).clamp(0, 1)

    def normalise(self, pixels: Tensor) -> Tensor:
        """Pixels -> normalised images, float32."""
        return (pixels.float() - self.mean) / self.std


__all__ = ["PixelSpace"]
