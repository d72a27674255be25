"""Citation strings that several methods' files share (a method's own sources stay in its file)."""

from __future__ import annotations

#: solo-learn's CIFAR recipes (facts only): ``SOLO.format("simclr")``.
SOLO = "solo-learn's CIFAR recipe (scripts/pretrain/cifar/{}.yaml)"
#: Why a width is smaller on digits.
DIGITS_WIDTH = "scaled down with the 256-wide digits network"
#: Why a queue is smaller on digits / on CIFAR-10.
QUEUE_DIGITS = "below the 1,347 digits training images (a larger queue would hold an image's own earlier keys)"
QUEUE_CIFAR = "below CIFAR-10's 50,000 training images (solo-learn's CIFAR recipes use 32,768 and 65,536)"
#: MoCo (He et al., 2020) and MoCo v2 (Chen et al., 2020), which MoCo and PCL follow.
MOCO = "He et al. (2020), MoCo"
MOCO_V2 = "Chen et al. (2020), MoCo v2"

__all__ = ["DIGITS_WIDTH", "MOCO", "MOCO_V2", "QUEUE_CIFAR", "QUEUE_DIGITS", "SOLO"]
