"""Image folders with broken files, shared by the reliability tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_folder_with_broken_files(root: Path) -> Path:
    """An unlabelled folder: 10 readable 8x8 images, one zero-byte file and one text file named like an image."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "broken-empty.png").write_bytes(b"")
    (root / "broken-text.jpg").write_text("not an image")
    return root
