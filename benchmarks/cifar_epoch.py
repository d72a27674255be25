"""Benchmark 4: one CIFAR-10 InvP epoch end to end (50,000 images, ResNet-18 CIFAR stem, batch 256), through the
library's Trainer with the default (tensor) pipeline; the kNN monitor is excluded.

    python benchmarks/cifar_epoch.py --data /tmp/cifar                  # a full epoch (GPU)
    python benchmarks/cifar_epoch.py --data /tmp/cifar --max-steps 10   # the first steps only (CPU), extrapolated

The first epoch is preceded by one warm-up epoch (or ``--max-steps`` steps) so that one-time costs (cuDNN autotuning,
torch.compile, caches) are not counted.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from common import machine, synchronize
from invprop.config import from_dict, preset
from invprop.engine import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="extracted CIFAR-10 ImageFolder copy (train/ and test/)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-steps", type=int, default=None, help="time only the first steps of the epoch")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--pipeline", default="tensor", choices=["tensor", "per_image"])
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the per_image pipeline")
    args = parser.parse_args()
    overrides = {
        "epochs": 200,
        "device": args.device,
        "compile": args.compile,
        "data": {"name": f"imagefolder:{args.data}", "augment": "cifar", "image_size": 32, "pipeline": args.pipeline,
                 "num_workers": args.workers},
        "optim": {"batch_size": 256},
    }  # fmt: skip
    cfg = from_dict(overrides, base=preset("cifar10"))
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), progress=False)
        steps = trainer.steps_per_epoch if args.max_steps is None else min(args.max_steps, trainer.steps_per_epoch)
        trainer.train_epoch(1, max_steps=args.max_steps)  # warm-up
        synchronize(trainer.device)
        start = time.perf_counter()
        trainer.train_epoch(2, max_steps=args.max_steps)
        synchronize(trainer.device)
        seconds = time.perf_counter() - start
    epoch = seconds * trainer.steps_per_epoch / steps
    print(f"# CIFAR-10 InvP epoch; {machine()}; {datetime.date.today()}; device {trainer.device}; pipeline {args.pipeline}; "
          f"precision {cfg.precision}; compile {args.compile}")  # fmt: skip
    print(f"timed {steps} of {trainer.steps_per_epoch} steps in {seconds:.2f} s ({steps * 256 / seconds:,.0f} images/s)")
    label = "measured" if steps == trainer.steps_per_epoch else "extrapolated from the timed steps"
    print(f"one epoch: {epoch:.1f} s ({label}); 200 epochs: {epoch * 200 / 60:.1f} min")


if __name__ == "__main__":
    main()
