"""Benchmark: what the mutual-information critics cost in one training step on the CIFAR-10 CPU compare's setting.

DIM's and AMDIM's critics embed every location of a feature map to ``units`` dimensions through a hidden layer of
the same width (the authors' 2048 and 1024). On the compare's small conv net and 32 x 32 images, one step (forward
and backward, batch 128, the cifar10 preset's settings) is timed at the published width and narrower ones, side by
side; the ratio is each width's step time over the published width's.

    python benchmarks/critic_width.py --widths 512 256
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

import torch

from common import machine, markdown_table, time_call
from invprop.config import from_dict, preset
from invprop.methods import METHODS, Batch, create_method
from invprop.models import build_encoder

BATCH = 128
SIDE = 32


def step_seconds(method: str, units: int | None, repeats: int) -> float:
    """Median seconds of one forward and backward step of ``method`` with its critics at ``units`` (None: the
    published width) on random CIFAR-sized batches."""
    cfg = from_dict({"method": method, "model": {"backbone": "small_convnet"}}, base=preset("cifar10"))
    m = cfg.model
    encoder = build_encoder(m.backbone, m.head, m.embedding_dim, m.hidden_dim, in_channels=3)
    own: dict[str, Any] = {"units": units} if units is not None else {}
    spec = METHODS.get(method)
    sections = {spec.section: own} if spec.section else {}
    model = create_method(method, encoder, num_samples=10_000, embedding_dim=m.embedding_dim, total_steps=100,
                          **sections)  # fmt: skip
    torch.manual_seed(0)
    views = [torch.randn(BATCH, 3, SIDE, SIDE) for _ in range(model.views)]
    batch = Batch.of(torch.arange(BATCH), *views)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.training_step(batch).loss.backward()

    return time_call(step, torch.device("cpu"), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["dim", "amdim"])
    parser.add_argument("--widths", nargs="+", type=int, default=[512, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for method in args.methods:
        spec = METHODS.get(method)
        published = int(spec.new_sections().__dict__[spec.section].units)
        base = step_seconds(method, None, args.repeats)
        rows.append([method, str(published), f"{base:.3f}", "1.00"])
        for width in args.widths:
            seconds = step_seconds(method, width, args.repeats)
            rows.append([method, str(width), f"{seconds:.3f}", f"{seconds / base:.2f}"])
    print(f"{machine()}, {datetime.date.today()}, batch {BATCH}, {SIDE} x {SIDE}, small_convnet")
    print(markdown_table(["method", "critic units", "s / step", "ratio to published"], rows))


if __name__ == "__main__":
    main()
