"""A FIFO queue of embeddings in registered buffers (MoCo's negatives, NNCLR's support set): saved with the
model's state, so a resumed run continues with the same queue."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invprop.settings import AT_LEAST_ONE, require


class FeatureQueue(nn.Module):
    """The last ``size`` rows enqueued, oldest overwritten first (He et al., 2020, MoCo, Sec. 3.2).

    Args:
        size: K, the capacity in rows.
        dim: D, the row width.

    Example:
        >>> q = FeatureQueue(3, 2)
        >>> q.enqueue(torch.ones(2, 2)); q.enqueue(2 * torch.ones(2, 2))
        >>> q.rows().sum(dim=1).tolist()  # 3 rows: the first one enqueued was overwritten, oldest first
        [2.0, 4.0, 4.0]
    """

    queue: Tensor
    pointer: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        require("queue size", size, AT_LEAST_ONE)
        self.register_buffer("queue", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return int(self.queue.shape[0])

    @torch.no_grad()
    def enqueue(self, rows: Tensor) -> None:
        """Write ``rows`` (B, D) after the newest row, wrapping around; with B > K only the last K are kept."""
        rows = rows.detach().to(self.queue.dtype)[-self.size :]
        n = rows.shape[0]
        start = int(self.pointer)
        index = (torch.arange(n, device=self.queue.device) + start) % self.size
        self.queue[index] = rows
        self.pointer.fill_((start + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))

    def rows(self) -> Tensor:
        """The filled rows, oldest first: (min(count, K), D)."""
        count = int(self.count)
        if count < self.size:
            return self.queue[:count]
        return torch.roll(self.queue, -int(self.pointer), dims=0)


__all__ = ["FeatureQueue"]
