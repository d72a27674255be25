"""The FIFO queue of MoCo and NNCLR: order, wrap-around, state."""

from __future__ import annotations

import pytest
import torch

from invprop.core.queue import FeatureQueue


def test_queue_keeps_the_last_rows_oldest_first() -> None:
    q = FeatureQueue(5, 1)
    assert q.rows().shape == (0, 1)
    for start in range(0, 12, 3):  # enqueue 0..11 in batches of 3
        q.enqueue(torch.arange(start, start + 3, dtype=torch.float).unsqueeze(1))
    assert q.rows().squeeze(1).tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]
    q.enqueue(torch.arange(100, 108, dtype=torch.float).unsqueeze(1))  # more than K rows at once
    assert q.rows().squeeze(1).tolist() == [103.0, 104.0, 105.0, 106.0, 107.0]


def test_queue_state_round_trips() -> None:
    q = FeatureQueue(4, 2)
    q.enqueue(torch.randn(3, 2))
    other = FeatureQueue(4, 2)
    other.load_state_dict(q.state_dict())
    assert torch.equal(other.rows(), q.rows())
    rows = torch.randn(2, 2)
    q.enqueue(rows)
    other.enqueue(rows)
    assert torch.equal(other.rows(), q.rows())


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue size must be at least 1"):
        FeatureQueue(0, 3)
