"""Benchmark 10: iBOT's block-wise masks of a batch, drawn one image at a time (BEiT's Alg. 1 as a Python loop per
image, as invprop drew them up to da41a3c) against the batched draw (:func:`invprop.core.token_masks.block_masks`:
a loop over rounds and tries, every image at once). Both run on the CPU in the training step, where iBOT draws them;
timed in alternating blocks. Prints a Markdown table of the median seconds per batch and their ratio.

    python benchmarks/block_masks.py --batches 64 256 --grids 8 14 --repeats 7
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import time

import torch

from common import machine, markdown_table
from invprop.core.token_masks import BEIT_ASPECT, BLOCK_TRIES, block_masks

#: iBOT's masking of a full-size view: half the views, 10-50% of their tokens.
PROBABILITY, RATIO = 0.5, (0.1, 0.5)


def _one_image(rows: int, cols: int, count: float) -> torch.Tensor:
    """BEiT's Alg. 1 for one image, one rectangle at a time."""
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    smallest, hidden = (min(rows, cols) // 3) ** 2, 0
    low, high = math.log(BEIT_ASPECT[0]), math.log(BEIT_ASPECT[1])
    while hidden < count:
        left, added = count - hidden, 0
        for _ in range(BLOCK_TRIES):
            area = smallest + (left - smallest) * float(torch.rand(()))
            ratio = math.exp(low + (high - low) * float(torch.rand(())))
            h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if h < rows and w < cols:
                top, start = int(torch.randint(0, rows - h + 1, ())), int(torch.randint(0, cols - w + 1, ()))
                new = int((~mask[top : top + h, start : start + w]).sum())
                if 0 < new <= left:
                    mask[top : top + h, start : start + w] = True
                    added = new
                    break
        if added == 0:
            break
        hidden += added
    return mask.flatten()


def per_image(batch: int, side: int) -> torch.Tensor:
    masks = torch.zeros(batch, side * side, dtype=torch.bool)
    for image in range(batch):
        if float(torch.rand(())) < PROBABILITY:
            share = RATIO[0] + (RATIO[1] - RATIO[0]) * float(torch.rand(()))
            masks[image] = _one_image(side, side, share * side * side)
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--grids", type=int, nargs="+", default=[8, 14], help="patch grid sides (8: CIFAR /4, 14: 224 /16)"
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for side in args.grids:
        for batch in args.batches:
            times: dict[str, list[float]] = {"per image": [], "batched": []}
            for _ in range(args.repeats):  # alternating, so that a drift of the machine hits both alike
                for name, draw in (
                    ("per image", per_image),
                    ("batched", lambda b, s: block_masks(b, s, s, PROBABILITY, RATIO)),
                ):
                    start = time.perf_counter()
                    draw(batch, side)
                    times[name].append(time.perf_counter() - start)
            before, after = (statistics.median(times[k]) for k in ("per image", "batched"))
            rows.append(
                [f"{side}x{side}", str(batch), f"{before * 1e3:.1f}", f"{after * 1e3:.1f}", f"{before / after:.1f}x"]
            )
    print(f"{machine()}; torch threads {torch.get_num_threads()}; {datetime.date.today()}\n")
    print(markdown_table(["grid", "batch", "per image ms", "batched ms", "ratio"], rows))


if __name__ == "__main__":
    main()
