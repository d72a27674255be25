"""Device parameters for tests that run on the CPU in every suite and on CUDA when there is one.

``DEVICES`` holds ``"cpu"`` and a ``"cuda"`` case marked ``gpu`` that skips without CUDA, so ``pytest -m gpu`` (the
GPU check, benchmarks/gpu_check.py) selects exactly the CUDA cases and the CPU cases keep the same code exercised in
CI. ``CUDA_ONLY`` marks a test that has no meaningful CPU form.
"""

from __future__ import annotations

import pytest
import torch

CUDA_ONLY = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_ONLY)]


def cuda_only(test):  # type: ignore[no-untyped-def]
    """Decorator: the test runs only where CUDA is available, and belongs to ``pytest -m gpu``."""
    for mark in reversed(CUDA_ONLY):
        test = mark(test)
    return test
