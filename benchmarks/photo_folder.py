"""Folders that stand in for a user's photos: CIFAR-10 images copied flat (no labels), or resized to mixed sizes.

    python benchmarks/photo_folder.py --out /tmp/photos --count 2000 --mixed

The mixed folder is CIFAR-10 test images, each resized to a random side between ``--smallest`` and ``--largest``
pixels and a random aspect ratio, saved as JPEG (a quarter of them as PNG, some greyscale): real photos' sizes and
formats, with CIFAR's content (upscaled, so blurrier than a camera's).
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from PIL import Image

#: The aspect ratios a mixed folder draws from (width / height).
ASPECTS = (0.75, 1.0, 1.33, 1.5)


def cifar_files(split: Path) -> list[Path]:
    """The images of a CIFAR-10 ImageFolder split, one class after another in turn (class-balanced prefixes)."""
    classes = [sorted(c.iterdir()) for c in sorted(p for p in split.iterdir() if p.is_dir())]
    return [files[i] for i in range(max(map(len, classes))) for files in classes if i < len(files)]


def flat_folder(split: Path, out: Path, count: int) -> Path:
    """The first ``count`` images of :func:`cifar_files`, copied into one flat folder."""
    out.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(cifar_files(split)[:count]):
        shutil.copyfile(source, out / f"{i:05d}{source.suffix}")
    return out


def mixed_folder(split: Path, out: Path, count: int, smallest: int, largest: int, seed: int = 0) -> Path:
    """``count`` images of :func:`cifar_files`, each resized to a random size and saved in a random format."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(cifar_files(split)[:count]):
        side = rng.randint(smallest, largest)
        aspect = rng.choice(ASPECTS)
        size = (max(1, round(side * aspect**0.5)), max(1, round(side / aspect**0.5)))
        with Image.open(source) as image:
            picture = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.1:
            picture = picture.convert("L")
        if rng.random() < 0.25:
            picture.save(out / f"photo-{i:05d}.png")
        else:
            picture.save(out / f"photo-{i:05d}.jpg", quality=90)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("~/.cache/invprop/data").expanduser())
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--mixed", action="store_true", help="random sizes and formats (else 32-px copies)")
    parser.add_argument("--smallest", type=int, default=48)
    parser.add_argument("--largest", type=int, default=640)
    args = parser.parse_args()
    split = args.data / "cifar10" / args.split
    if args.mixed:
        mixed_folder(split, args.out, args.count, args.smallest, args.largest)
    else:
        flat_folder(split, args.out, args.count)


if __name__ == "__main__":
    main()
