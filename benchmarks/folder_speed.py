"""Benchmark 7: a folder of 32-px images, after its decode cache, against CIFAR-10 on the same net and pipeline.

A user's flat folder (no classes) of N CIFAR-10 training images, copied file by file, against the built-in
``cifar10`` dataset cut to the same N images: the same small conv net, batch, method and tensor pipeline. Each is
built once to fill its cache (not timed), then both are built again (from the cache) and their training steps timed
in alternation, so that whatever else the machine does falls on both. Prints images/s and their ratio.

    python benchmarks/folder_speed.py --data ~/.cache/invprop/data --images 10000 --steps 20 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

from common import machine, synchronize
from invprop.config import Config, from_dict, preset
from invprop.engine import Trainer
from photo_folder import flat_folder

BATCH = 128
METHOD = "simclr"


def config(dataset: str, root: Path, cache: Path, subset: int | None) -> Config:
    """The cifar10 preset with the CPU compare's net and batch, on ``dataset``, tensor pipeline, no workers."""
    overrides = {
        "method": METHOD,
        "device": "cpu",
        "model": {"backbone": "small_convnet"},
        "data": {"name": dataset, "root": str(root), "image_size": 32, "augment": "cifar", "pipeline": "tensor",
                 "num_workers": 0, "cache_dir": str(cache), "subset": subset, "holdout": 0.0},
        "optim": {"batch_size": BATCH},
    }  # fmt: skip
    return from_dict(overrides, base=preset("cifar10"))


def steps_per_second(trainer: Trainer, steps: int, epoch: int) -> float:
    synchronize(trainer.device)
    start = time.perf_counter()
    trainer.train_epoch(epoch, max_steps=steps)
    synchronize(trainer.device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("~/.cache/invprop/data").expanduser(),
                        help="the folder holding cifar10/train/<class>/ (the extracted tarball)")  # fmt: skip
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements of each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = flat_folder(args.data / "cifar10" / "train", Path(scratch) / "folder", args.images)
        cache = Path(scratch) / "cache"
        setups = {
            "cifar10 (built-in)": config("cifar10", args.data, cache, args.images),
            "folder (unlabelled, cached)": config(f"imagefolder:{folder}", args.data, cache, None),
        }
        build_seconds = {}
        for name, cfg in setups.items():  # the first build decodes into the cache
            start = time.perf_counter()
            Trainer(cfg, Path(scratch) / "warm", progress=False)
            build_seconds[name] = time.perf_counter() - start
        trainers = {}
        for name, cfg in setups.items():
            start = time.perf_counter()
            trainers[name] = Trainer(cfg, Path(scratch) / name.split()[0], progress=False)
            build_seconds[name + " again"] = time.perf_counter() - start
            trainers[name].train_epoch(1, max_steps=3)  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in trainers}
        for repeat in range(args.repeats):
            for name, trainer in trainers.items():
                rates[name].append(steps_per_second(trainer, args.steps, 2 + repeat) * BATCH)
    print(f"# folder vs CIFAR-10 -- {machine()} -- {datetime.date.today()}")
    print(f"{args.images} images, {METHOD}, small_convnet, batch {BATCH}, tensor pipeline, {args.steps} steps x "
          f"{args.repeats} alternating")  # fmt: skip
    for name, seconds in build_seconds.items():
        print(f"build {name}: {seconds:.1f} s")
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        print(f"{name}: {rate:.0f} images/s (runs: {', '.join(f'{r:.0f}' for r in rates[name])})")
    cifar, folder_rate = medians.values()
    print(f"ratio cifar10 / folder: {cifar / folder_rate:.2f}x")


if __name__ == "__main__":
    main()
