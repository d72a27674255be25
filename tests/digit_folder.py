"""A folder of digit images for the image-folder tests: scikit-learn's 8x8 digits, upscaled, as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digit_folder(root: Path, count: int, side: int = 32) -> list[tuple[str, int]]:
    """``count`` digits as ``side`` x ``side`` RGB PNGs directly in ``root`` (no class folders: unlabelled);
    returns each file's name and its digit."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        pixels = (bunch.images[i] / 16.0 * 255).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((side, side), Image.Resampling.BILINEAR).convert("RGB")
        name = f"{i:04d}.png"
        image.save(root / name)
        written.append((name, int(bunch.target[i])))
    return written
