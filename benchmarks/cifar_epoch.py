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
from typing import Any

from common import machine, synchronize
from invprop.config import Config, from_dict, preset
from invprop.engine import Trainer

BATCH = 256


def epoch_config(
    data_root: str | Path,
    device: str = "auto",
    compile_model: bool = False,
    pipeline: str = "tensor",
    workers: int = 8,
    batch: int = BATCH,
    cache_dir: str | Path | None = "~/.cache/invprop/images",
    epochs: int = 200,
) -> Config:
    """The cifar10 preset on an extracted CIFAR-10 ImageFolder copy, with this benchmark's batch and pipeline."""
    overrides = {
        "epochs": epochs,
        "device": device,
        "compile": compile_model,
        "data": {"name": f"imagefolder:{data_root}", "augment": "cifar", "image_size": 32, "pipeline": pipeline,
                 "num_workers": workers, "cache_dir": None if cache_dir is None else str(cache_dir)},
        "optim": {"batch_size": batch},
    }  # fmt: skip
    return from_dict(overrides, base=preset("cifar10"))


def measure_epoch(cfg: Config, max_steps: int | None = None) -> dict[str, Any]:
    """Time one training epoch of ``cfg`` (or its first ``max_steps`` steps) after a warm-up epoch of as many steps."""
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), progress=False)
        per_epoch = trainer.steps_per_epoch
        steps = per_epoch if max_steps is None else min(max_steps, per_epoch)
        trainer.train_epoch(1, max_steps=max_steps)  # warm-up
        synchronize(trainer.device)
        start = time.perf_counter()
        trainer.train_epoch(2, max_steps=max_steps)
        synchronize(trainer.device)
        seconds = time.perf_counter() - start
    return {
        "device": str(trainer.device),
        "precision": cfg.precision,
        "compile": cfg.compile,
        "pipeline": cfg.data.pipeline,
        "batch": cfg.optim.batch_size,
        "steps_timed": steps,
        "steps_per_epoch": per_epoch,
        "seconds_timed": seconds,
        "images_per_s": steps * cfg.optim.batch_size / seconds,
        "epoch_seconds": seconds * per_epoch / steps,
        "measured": steps == per_epoch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="extracted CIFAR-10 ImageFolder copy (train/ and test/)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-steps", type=int, default=None, help="time only the first steps of the epoch")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--pipeline", default="tensor", choices=["tensor", "per_image"])
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the per_image pipeline")
    args = parser.parse_args()
    cfg = epoch_config(args.data, args.device, args.compile, args.pipeline, args.workers)
    result = measure_epoch(cfg, args.max_steps)
    print(f"# CIFAR-10 InvP epoch; {machine()}; {datetime.date.today()}; device {result['device']}; pipeline {args.pipeline}; "
          f"precision {cfg.precision}; compile {args.compile}")  # fmt: skip
    print(f"timed {result['steps_timed']} of {result['steps_per_epoch']} steps in {result['seconds_timed']:.2f} s "
          f"({result['images_per_s']:,.0f} images/s)")  # fmt: skip
    label = "measured" if result["measured"] else "extrapolated from the timed steps"
    print(
        f"one epoch: {result['epoch_seconds']:.1f} s ({label}); 200 epochs: {result['epoch_seconds'] * 200 / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
