"""Propagation diagnostics: how well discovered positives and hard negatives agree with held-back labels.

They answer the paper's core question -- does propagation stay inside high-density, same-class regions? -- and
never influence training (everything runs without autograd, on labels the objective never sees). Unknown labels
(``-1``) are left out of every ratio.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The floor of a probability before its logarithm in an entropy (0 log 0 counts as 0).
PROBABILITY_FLOOR = 1e-30


def entropies(probs: Tensor, dim: int = -1) -> Tensor:
    """``H(p) = -sum_k p_k log p_k`` (nats) of each distribution along ``dim``.

    Example:
        >>> round(float(entropies(torch.full((4,), 0.25))), 4)  # log 4
        1.3863
    """
    return -(probs * probs.clamp_min(PROBABILITY_FLOOR).log()).sum(dim=dim)


def label_agreement(labels: Tensor, anchors: Tensor, members: Tensor, mask: Tensor) -> Tensor:
    """Fraction of (anchor, member) pairs with known labels where the member shares the anchor's label.

    Args:
        labels: (N,) int64 bank-row labels, ``-1`` unknown.
        anchors: (B,) bank rows of the anchors.
        members: (B, M) bank rows (any padding value where ``mask`` is False).
        mask: (B, M) bool, the real members.

    Returns:
        0-d float tensor; NaN when no pair has both labels known.
    """
    anchor_labels = labels[anchors].unsqueeze(1)
    member_labels = labels[members.clamp_min(0)]
    known = mask & (member_labels >= 0) & (anchor_labels >= 0)
    same = known & (member_labels == anchor_labels)
    return same.sum().float() / known.sum().float()  # 0 / 0: NaN, on the device (no host sync)


def rows_contain_any(rows: Tensor, values: Tensor, values_mask: Tensor) -> Tensor:
    """(B,) bool: does row b of ``rows`` (B, R) contain any of the valid ``values[b]`` (B, M)? No B x R x M tensor."""
    if rows.shape[1] == 0 or values.shape[1] == 0:
        return torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    ordered, _ = rows.sort(dim=1)
    position = torch.searchsorted(ordered, values.contiguous()).clamp_max(rows.shape[1] - 1)
    return ((ordered.gather(1, position) == values) & values_mask).any(dim=1)


@torch.no_grad()
def positive_diagnostics(
    labels: Tensor,
    anchors: Tensor,
    positives: Tensor,
    positive_mask: Tensor,
    hard_positives: Tensor,
    hard_positive_mask: Tensor,
    background: Tensor | None,
) -> dict[str, Tensor]:
    """Per-batch diagnostics of an InvP-style objective (means over the batch).

    Returns:
        ``purity_positive`` and ``purity_hard_positive``: label agreement of the discovered and of the selected
        (hard) positives; with a hard-negative background also ``background_has_positive`` (fraction of anchors
        whose M_i holds one of their own discovered positives, which then also count as negatives) and
        ``background_same_label`` (label agreement of M_i without the anchor's own row: the false-negative rate).
    """
    out = {
        "purity_positive": label_agreement(labels, anchors, positives, positive_mask),
        "purity_hard_positive": label_agreement(labels, anchors, hard_positives, hard_positive_mask),
    }
    if background is not None:
        out["background_has_positive"] = rows_contain_any(background, positives, positive_mask).float().mean()
        not_self = background != anchors.unsqueeze(1)
        out["background_same_label"] = label_agreement(labels, anchors, background, not_self)
    return {key: value.float() for key, value in out.items()}
