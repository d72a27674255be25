"""Benchmark 2: training throughput of ResNet-18 (CIFAR stem) on 32x32 images, and InvP's overhead.

Variants, measured one after the other in one run on the same machine:
  fast       tensor pipeline (uint8 images on the device, batch augmentation there), bf16 autocast and
             channels_last on CUDA (fp32 on CPU), InvP objective
  baseline   fp32, per-image torchvision augmentation on the CPU in DataLoader workers (JPEG decoded per image, as
             the authors' pipeline does), InvP objective
  ce         the fast variant's backbone and data path with a plain cross-entropy head instead of InvP
InvP overhead = step time of fast / step time of ce.

    python benchmarks/throughput.py --data /tmp/cifar --steps 50            # on a GPU
    python benchmarks/throughput.py --data /tmp/cifar --steps 5 --warmup 1  # on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from common import machine, markdown_table, pick_device, synchronize
from invprop.config import build_method, preset
from invprop.data import DataSettings, EpochBatchSampler, TensorBatches, datasets_from
from invprop.machine import available_cores
from invprop.methods import Batch, StepOutput
from invprop.models import encoder_from

BATCH = 256


def batches_fast(data, device: torch.device, batch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    loader = TensorBatches(data.train_images, batch, device)
    augment = data.batch_augment.to(device)
    labels = data.train_images.labels.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    for epoch in itertools.count():
        for indices, images in loader.epoch(epoch):
            yield indices, augment(images, generator), labels[indices]


def batches_per_image(data, device: torch.device, workers: int, batch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    sampler = EpochBatchSampler(len(data.train), batch)
    loader = DataLoader(
        data.train, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
    )  # fmt: skip
    for epoch in itertools.count():
        sampler.set_epoch_seed(epoch)
        for indices, images, labels in loader:
            yield (
                indices.to(device, non_blocking=True),
                images.to(device, non_blocking=True),
                labels.to(device, non_blocking=True),
            )


class CrossEntropyModel(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.encoder = encoder_from(preset("cifar10").model, in_channels=3)
        self.classifier = nn.Linear(self.encoder.feature_dim, classes)

    def step(self, indices: Tensor, images: Tensor, labels: Tensor) -> StepOutput:
        return StepOutput(nn.functional.cross_entropy(self.classifier(self.encoder.features(images)), labels))

    def after_step(self, out: StepOutput) -> None:
        pass


class InvPModel(nn.Module):
    def __init__(self, n: int, device: torch.device) -> None:
        super().__init__()
        cfg = preset("cifar10")
        encoder = encoder_from(cfg.model, in_channels=3).to(device)
        self.method = build_method(cfg, encoder, n)
        self.encoder = encoder

    def step(self, indices: Tensor, images: Tensor, labels: Tensor) -> StepOutput:
        return self.method.training_step(Batch.of(indices, images, epoch=100))  # after the ramp-up: both terms on

    def after_step(self, out: StepOutput) -> None:
        self.method.after_step([out])


def run(
    model: nn.Module, batches: Iterator, device: torch.device, fast: bool, steps: int, warmup: int, compile_model: bool
) -> float:
    """Seconds per step (mean over ``steps`` after ``warmup``)."""
    model.to(device)
    if fast and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    if compile_model:
        model.encoder.compile()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    amp: Callable[[], contextlib.AbstractContextManager] = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if fast and device.type == "cuda"
        else contextlib.nullcontext
    )
    model.train()
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        indices, images, labels = next(batches)
        if fast and device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with amp():
            out = model.step(indices, images, labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        model.after_step(out)
    synchronize(device)
    return (time.perf_counter() - start) / steps


#: The variants: label -> (InvP or cross-entropy, fast data path, torch.compile).
VARIANTS = {
    "fast": ("invp", True, False),
    "baseline": ("invp", False, False),
    "ce": ("ce", True, False),
    "fast+compile": ("invp", True, True),
    "ce+compile": ("ce", True, True),
}
PLAIN = ("fast", "baseline", "ce")


def measure_throughput(
    data_root: str | Path,
    device: torch.device,
    steps: int,
    warmup: int,
    workers: int,
    variants: tuple[str, ...] = PLAIN,
    cache_dir: str | Path | None = None,
    batch: int = BATCH,
    on_row: Callable[[str, float], None] | None = None,
) -> dict[str, float]:
    """Seconds per step of each of ``variants`` (see :data:`VARIANTS`), measured one after the other."""
    torch.manual_seed(0)
    name = f"imagefolder:{data_root}"
    settings = DataSettings(
        name=name, augment="cifar", image_size=32, cache_dir=None if cache_dir is None else str(cache_dir)
    )
    fast_data = datasets_from(dataclasses.replace(settings, pipeline="tensor"))
    slow_data = None
    n = len(fast_data.train)
    results: dict[str, float] = {}
    for label in variants:
        objective, fast, compiled = VARIANTS[label]
        model = InvPModel(n, device) if objective == "invp" else CrossEntropyModel(10)
        if fast:
            batches = batches_fast(fast_data, device, batch)
        else:
            if slow_data is None:
                slow_data = datasets_from(dataclasses.replace(settings, pipeline="per_image"))
            batches = batches_per_image(slow_data, device, workers, batch)
        results[label] = run(model, batches, device, fast, steps, warmup, compiled)
        if on_row is not None:
            on_row(label, results[label])
    return results


def summary(results: dict[str, float]) -> dict[str, float]:
    """The ratios the targets are about: fast / baseline throughput and InvP's overhead over cross-entropy."""
    out = {
        "fast_over_baseline": results["baseline"] / results["fast"],
        "invp_overhead": results["fast"] / results["ce"],
    }
    if "fast+compile" in results:
        out["compiled_fast_over_baseline"] = results["baseline"] / results["fast+compile"]
        out["compiled_invp_overhead"] = results["fast+compile"] / results["ce+compile"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="extracted CIFAR-10 ImageFolder copy (train/<class>/*.jpg)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of the baseline (default: cores)")
    parser.add_argument(
        "--compile", action="store_true", help="also measure the fast and ce variants with torch.compile"
    )
    parser.add_argument("--cache-dir", default="~/.cache/invprop/images")
    args = parser.parse_args()
    device = pick_device(args.device)
    workers = args.workers if args.workers is not None else default_workers()
    print(f"# throughput, ResNet-18 CIFAR stem, batch {BATCH}; {machine()}; {datetime.date.today()}; device {device}")
    print(f"# {args.steps} timed steps after {args.warmup} warm-up steps; baseline workers {workers}")
    print(markdown_table(("variant", "s/step", "images/s"), []), end="")
    variants = PLAIN + (("fast+compile", "ce+compile") if args.compile else ())
    results = measure_throughput(
        args.data, device, args.steps, args.warmup, workers, variants, args.cache_dir,
        on_row=lambda label, seconds: print(f"| {label} | {seconds:.4f} | {BATCH / seconds:,.0f} |", flush=True),
    )  # fmt: skip
    ratios = summary(results)
    print(f"fast / baseline throughput: {ratios['fast_over_baseline']:.2f}x")
    print(f"InvP overhead (fast step / cross-entropy step): {ratios['invp_overhead']:.3f} "
          f"({(ratios['invp_overhead'] - 1) * 100:+.1f}%)")  # fmt: skip
    if "compiled_invp_overhead" in ratios:
        print(f"with torch.compile: fast / baseline {ratios['compiled_fast_over_baseline']:.2f}x, "
              f"InvP overhead {ratios['compiled_invp_overhead']:.3f}")  # fmt: skip


def default_workers() -> int:
    """DataLoader workers of the baseline: one per core, at most 16."""
    return min(16, available_cores())


if __name__ == "__main__":
    main()
