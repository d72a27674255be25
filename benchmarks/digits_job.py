"""Benchmark 3 (CPU part): the digits main job (`invprop train`, 100 epochs) with each data pipeline.

Reports, per pipeline, the whole job's wall time (dataset setup, training, the per-epoch kNN monitor, checkpoints)
and the mean training-epoch time (monitor excluded), measured one after the other in one run.

    python benchmarks/digits_job.py
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import torch

from common import machine
from invprop.config import from_dict, preset
from invprop.engine import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epoch-repeats", type=int, default=10, help="training epochs timed for the epoch time")
    args = parser.parse_args()
    print(
        f"# digits main job; {machine()}; {datetime.date.today()}; device {args.device}; torch threads {torch.get_num_threads()}"
    )
    print("| pipeline | job wall time s | training epoch s | held-out kNN top-1 |")
    print("|---|---|---|---|")
    times = {}
    for pipeline in ("tensor", "per_image"):
        cfg = from_dict({"device": args.device, "data": {"pipeline": pipeline}}, base=preset("digits"))
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            result = Trainer(cfg, Path(run_dir) / "job", progress=False).fit()
            wall = time.perf_counter() - start
            trainer = Trainer(cfg, Path(run_dir) / "epochs", progress=False)
            start = time.perf_counter()
            for epoch in range(1, args.epoch_repeats + 1):
                trainer.train_epoch(epoch)
            epoch_s = (time.perf_counter() - start) / args.epoch_repeats
        times[pipeline] = (wall, epoch_s)
        print(f"| {pipeline} | {wall:.1f} | {epoch_s:.3f} | {result.metrics['knn_top1']:.4f} |", flush=True)
    print(f"tensor / per_image: job {times['tensor'][0] / times['per_image'][0]:.2f}x, "
          f"epoch {times['tensor'][1] / times['per_image'][1]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
