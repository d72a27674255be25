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
import datetime
import itertools
import time
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from common import machine, pick_device, synchronize
from invprop.config import from_dict, preset
from invprop.data import EpochSampler, TensorBatches, build_datasets
from invprop.methods import METHODS
from invprop.models import build_encoder

BATCH = 256


def batches_fast(data, device: torch.device) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    loader = TensorBatches(data.train_images, BATCH, True, device)
    augment = data.batch_augment.to(device)
    labels = data.train_images.labels.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    for epoch in itertools.count():
        for indices, images in loader.epoch(epoch):
            yield indices, augment(images, generator), labels[indices]


def batches_per_image(data, device: torch.device, workers: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    sampler = EpochSampler(len(data.train))
    loader = DataLoader(
        data.train, BATCH, sampler=sampler, drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
    )  # fmt: skip
    for epoch in itertools.count():
        sampler.set_epoch_seed(epoch)
        for indices, images, labels in loader:
            yield indices.to(device, non_blocking=True), images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


class CrossEntropyModel(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.encoder = build_encoder("resnet18_cifar", "mlp", 128, in_channels=3)
        self.classifier = nn.Linear(self.encoder.feature_dim, classes)

    def step(self, indices: Tensor, images: Tensor, labels: Tensor) -> Tensor:
        return nn.functional.cross_entropy(self.classifier(self.encoder.features(images)), labels)

    def after_step(self) -> None:
        pass


class InvPModel(nn.Module):
    def __init__(self, n: int, device: torch.device) -> None:
        super().__init__()
        cfg = preset("cifar10")
        encoder = build_encoder("resnet18_cifar", "mlp", 128, in_channels=3).to(device)
        self.method = METHODS.get("invp")(cfg, encoder, n)
        self.encoder = encoder

    def step(self, indices: Tensor, images: Tensor, labels: Tensor) -> Tensor:
        return self.method.training_step(indices, images, epoch=100).loss  # after the ramp-up: both terms on

    def after_step(self) -> None:
        self.method.after_step()


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
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if fast and device.type == "cuda" else contextlib.nullcontext
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
            loss = model.step(indices, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.after_step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="extracted CIFAR-10 ImageFolder copy (train/<class>/*.jpg)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of the baseline (default: cores)")
    parser.add_argument("--compile", action="store_true", help="also measure the fast variant with torch.compile")
    parser.add_argument("--cache-dir", default="~/.cache/invprop/images")
    args = parser.parse_args()
    device = pick_device(args.device)
    workers = args.workers if args.workers is not None else min(16, torch.get_num_threads())
    torch.manual_seed(0)
    name = f"imagefolder:{args.data}"
    fast_data = build_datasets(name, augment="cifar", image_size=32, pipeline="tensor", cache_dir=args.cache_dir)
    slow_data = build_datasets(name, augment="cifar", image_size=32, pipeline="per_image")
    n = len(fast_data.train)
    print(f"# throughput, ResNet-18 CIFAR stem, batch {BATCH}, N={n:,}; {machine()}; {datetime.date.today()}; device {device}")
    print(f"# {args.steps} timed steps after {args.warmup} warm-up steps; baseline workers {workers}")
    results: dict[str, float] = {}
    variants = [
        ("fast", lambda: InvPModel(n, device), lambda: batches_fast(fast_data, device), True, False),
        ("baseline", lambda: InvPModel(n, device), lambda: batches_per_image(slow_data, device, workers), False, False),
        ("ce", lambda: CrossEntropyModel(10), lambda: batches_fast(fast_data, device), True, False),
    ]
    if args.compile:
        variants.append(("fast+compile", lambda: InvPModel(n, device), lambda: batches_fast(fast_data, device), True, True))
    print("| variant | s/step | images/s |")
    print("|---|---|---|")
    for label, make_model, make_batches, fast, compile_model in variants:
        seconds = run(make_model(), make_batches(), device, fast, args.steps, args.warmup, compile_model)
        results[label] = seconds
        print(f"| {label} | {seconds:.4f} | {BATCH / seconds:,.0f} |", flush=True)
    print(f"fast / baseline throughput: {results['baseline'] / results['fast']:.2f}x")
    print(f"InvP overhead (fast step / cross-entropy step): {results['fast'] / results['ce']:.3f} "
          f"({(results['fast'] / results['ce'] - 1) * 100:+.1f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
