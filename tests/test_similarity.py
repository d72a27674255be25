from __future__ import annotations

import pytest
import torch

from invprop.distributed import similarity
from invprop.distributed.similarity import gathered_dot, topk_similarities


@pytest.mark.parametrize("block_elements", [1, 7 * 5, 1 << 26])
def test_topk_in_blocks_equals_dense_topk(block_elements: int) -> None:
    query = torch.nn.functional.normalize(torch.randn(7, 16), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(300, 16), dim=1)
    values, indices = topk_similarities(query, keys, 20, block_elements=block_elements)
    dense_values, dense_indices = (query @ keys.T).topk(20, dim=1)
    torch.testing.assert_close(values, dense_values)
    assert torch.equal(indices, dense_indices)  # continuous random data: no ties


def test_topk_with_half_precision_keys_ranks_by_stored_values() -> None:
    query = torch.nn.functional.normalize(torch.randn(5, 32), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(500, 32), dim=1).half()
    values, indices = topk_similarities(query, keys, 10, block_elements=5 * 64)
    dense = query @ keys.float().T
    torch.testing.assert_close(values, dense.gather(1, indices))
    assert torch.equal(indices, dense.topk(10, dim=1).indices)


def test_topk_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be"):
        topk_similarities(torch.randn(2, 4), torch.randn(5, 4), 6)


@pytest.mark.parametrize("block_elements", [1, 50, 1 << 24])
def test_gathered_dot_matches_dense_forward_and_backward(block_elements: int) -> None:
    query = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(40, 8, dtype=torch.float64)
    columns = torch.randint(0, 40, (6, 11))
    weights = torch.randn(6, 11, dtype=torch.float64)
    out = gathered_dot(query, keys, columns, block_elements)
    (out * weights).sum().backward()
    grad = query.grad.clone()
    query.grad = None
    dense = (query @ keys.T).gather(1, columns)
    (dense * weights).sum().backward()
    torch.testing.assert_close(out, dense)
    torch.testing.assert_close(grad, query.grad)


def test_gathered_dot_passes_gradcheck() -> None:
    query = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(9, 4, dtype=torch.float64)
    columns = torch.tensor([[0, 1, 1], [8, 2, 0], [5, 5, 5]])
    assert torch.autograd.gradcheck(lambda q: gathered_dot(q, keys, columns, 4), (query,))


def test_gathered_dot_rejects_mismatched_columns() -> None:
    with pytest.raises(ValueError, match="columns must be"):
        gathered_dot(torch.randn(3, 4), torch.randn(9, 4), torch.zeros(2, 5, dtype=torch.long))


def test_gather_is_cheaper_from_the_row_ratio_on() -> None:
    chosen = 4 + 1
    assert similarity.gather_is_cheaper(similarity.GATHER_ROW_RATIO * chosen, chosen)
    assert not similarity.gather_is_cheaper(similarity.GATHER_ROW_RATIO * chosen - 1, chosen)
