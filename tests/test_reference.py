"""The library's InvP step (fast path) against the authors' dense formulation, on identical inputs."""

from __future__ import annotations

import pytest
import torch

from authors_reference import authors_step
from invprop.core import InvariancePropagationLoss, MemoryBank


@pytest.mark.parametrize("n_background", [64, 300])
def test_fast_step_equals_authors_step(n_background: int) -> None:
    torch.manual_seed(3)
    n, d, k, tau, weight, momentum = 300, 16, 4, 0.2, 0.6, 0.5
    bank = MemoryBank(n, d, momentum=momentum, num_neighbors=k, generator=torch.Generator().manual_seed(0))
    bank_ref = bank.features.clone().double()
    neighbors_ref = bank.neighbors.clone()
    indices = torch.randperm(n)[:32]
    base = bank.features[indices] + 0.3 * torch.randn(32, d)

    emb_ref = base.double().requires_grad_()
    loss_ref = authors_step(emb_ref, indices, bank_ref, neighbors_ref, tau, n_background, 3, 20, weight, momentum)

    emb = base.clone().requires_grad_()
    objective = InvariancePropagationLoss(tau, n_background=n_background, steps=3, n_hard_positives=20, exact=False)
    out = objective(emb, indices, bank)
    loss = out.instance + weight * out.invariance
    loss.backward()
    bank.refresh_neighbors(indices, emb.detach(), candidates=out.background)
    bank.update(indices, emb.detach())

    torch.testing.assert_close(loss.double(), loss_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(emb.grad.double(), emb_ref.grad, rtol=1e-3, atol=1e-5)
    assert torch.equal(bank.neighbors, neighbors_ref)
    torch.testing.assert_close(bank.features.double(), bank_ref, rtol=1e-5, atol=1e-6)
