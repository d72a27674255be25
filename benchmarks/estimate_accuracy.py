"""Benchmark 8: the time estimate said after a run's first steps, against the epoch it estimated.

For folders of different sizes (flat copies of CIFAR-10 images, and photos of mixed sizes decoded at 32 px), each
method trains two epochs through the library's Trainer with the fitted CPU choices (small conv net, 32 px, batch
128, the tensor pipeline); the monitor runs after the second epoch only, so the first epoch's time is the steps the
estimate speaks of. Prints the estimate, the measured first epoch and their ratio.

    python benchmarks/estimate_accuracy.py --sizes 1000,4000,10000 --mixed 2000 --methods simclr,invp
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

from common import machine
from invprop.config import Config, from_dict, preset
from invprop.engine import Trainer
from invprop.engine.history import History
from photo_folder import flat_folder, mixed_folder

#: The largest error the estimate is allowed (issue "Your own unlabelled images, end to end").
TOLERANCE = 0.25


def config(folder: Path, method: str, cache: Path) -> Config:
    overrides = {
        "method": method,
        "epochs": 2,
        "device": "cpu",
        "model": {"backbone": "small_convnet"},
        "data": {"name": f"imagefolder:{folder}", "image_size": 32, "augment": "cifar", "pipeline": "tensor",
                 "num_workers": 0, "cache_dir": str(cache)},
        "optim": {"batch_size": 128},
        "eval": {"every": 2},
    }  # fmt: skip
    return from_dict(overrides, base=preset("cifar10"))


def measure(folder: Path, method: str, cache: Path, run_dir: Path) -> tuple[float, float]:
    """(estimated, measured) seconds of the first epoch of ``method`` on ``folder``."""
    trainer = Trainer(config(folder, method, cache), run_dir, progress=False)
    trainer.fit()
    estimated = trainer.estimated_epoch_seconds
    assert estimated is not None, "the run was too short to estimate"
    measured = float(History(run_dir).read()[0]["seconds"])
    return estimated, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("~/.cache/invprop/data").expanduser())
    parser.add_argument("--sizes", default="1000,4000,10000", help="flat 32-px folders of these many images")
    parser.add_argument("--mixed", type=int, default=2000, help="a folder of this many mixed-size photos (0: none)")
    parser.add_argument("--methods", default="simclr,invp")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        folders = {
            f"{n} images, 32 px": flat_folder(args.data / "cifar10" / "train", root / f"flat-{n}", n)
            for n in map(int, args.sizes.split(","))
        }
        if args.mixed:
            photos = mixed_folder(args.data / "cifar10" / "test", root / "mixed", args.mixed, 48, 640)
            folders[f"{args.mixed} photos, 48-640 px"] = photos
        for name, folder in folders.items():
            for method in args.methods.split(","):
                run = root / "runs" / f"{folder.name}-{method}"
                rows.append((name, method, *measure(folder, method, root / "cache", run)))
    print(f"# estimate after the first steps vs the measured first epoch -- {machine()} -- {datetime.date.today()}")
    print("| folder | method | estimated s | measured s | measured / estimated |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name, method, estimated, measured in rows:
        worst = max(worst, abs(measured / estimated - 1))
        print(f"| {name} | {method} | {estimated:.1f} | {measured:.1f} | {measured / estimated:.2f} |")
    print(f"largest error {worst:.0%} (allowed {TOLERANCE:.0%}): {'within' if worst <= TOLERANCE else 'OUTSIDE'}")


if __name__ == "__main__":
    main()
