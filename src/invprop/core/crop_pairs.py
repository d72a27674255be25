"""Multi-crop for the two-view objectives: which views a loss compares, and how the comparisons are combined.

Multi-crop (Caron et al., 2020, Sec. 3.2) adds small, low-resolution crops to the two full-size views of an image.
SwAV and DINO compare every crop with the full-size views only: a target (code, teacher output, momentum key) is
computed on a full-size view, never on a small crop. The two-view objectives take the same rule here:

- an *ordered* objective (a prediction of one view regresses, or is contrasted with, a target of the other: BYOL,
  SimSiam, MoCo, NNCLR) compares each full-size target view ``t`` with every other view ``c`` (solo-learn, da Costa
  et al., 2022, does the same for BYOL and its kin), :func:`target_pairs`;
- a *symmetric* objective (NT-Xent, Barlow Twins, VICReg, ...) compares each unordered pair with at least one
  full-size view, :func:`view_pairs`.

:func:`mean_over_pairs` averages the pairs' losses and scales the mean so that two views give exactly the method's
published two-view loss (e.g. BYOL's sum of its two directions): more crops add comparisons, not loss scale.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor

#: The full-size views of a two-view batch; every other view is a multi-crop small crop.
FULL_SIZE_VIEWS = 2


def target_pairs(views: int, targets: Sequence[int] = range(FULL_SIZE_VIEWS)) -> list[tuple[int, int]]:
    """The ordered ``(target, other)`` pairs of an ordered objective: each target view with every other view (the
    pairs solo-learn's BYOL, da Costa et al., 2022, sums over; Caron et al., 2020, Sec. 3.2, for SwAV's codes).

    Args:
        views: V, the views of each image (the full-size ones first, then the small crops).
        targets: the views whose targets are compared (full-size ones; MoCo without symmetry takes only the second).

    Example:
        >>> target_pairs(3)
        [(0, 1), (0, 2), (1, 0), (1, 2)]
    """
    if views < 2 or any(not 0 <= t < views for t in targets):
        raise ValueError(
            f"target views {list(targets)} need to lie in [0, {views}) and there must be two views or more"
        )
    return [(t, c) for t in targets for c in range(views) if c != t]


def view_pairs(views: int, full_size: int = FULL_SIZE_VIEWS) -> list[tuple[int, int]]:
    """The unordered pairs ``(i, j)``, ``i < j``, of a symmetric objective that hold at least one full-size view
    (two small crops are never compared, as in SwAV's and DINO's multi-crop: Caron et al., 2020, Sec. 3.2; Caron et
    al., 2021, Sec. 3.1).

    Example:
        >>> view_pairs(4)
        [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    """
    if views < 2:
        raise ValueError(f"a symmetric objective compares two views or more, got {views}")
    return [(i, j) for i in range(min(full_size, views)) for j in range(i + 1, views)]


def mean_over_pairs(loss: Callable[[int, int], Tensor], pairs: Sequence[tuple[int, int]], scale: float = 1.0) -> Tensor:
    """``scale / P * sum_{(a, b) in pairs} loss(a, b)``: the mean of the P pairs' losses, times ``scale``.

    ``scale`` makes the two-view case the published loss: 2 for an objective that sums its two directions (BYOL,
    Grill et al., 2020, Eq. 2's symmetrised loss; MoCo v3, Chen, Xie & He, 2021, Alg. 1), 1 for one that averages
    them or has one pair (SimCLR, SimSiam).

    Args:
        loss: ``loss(a, b)`` -> the 0-d loss of views ``a`` and ``b`` (a target view first, for an ordered pair).
        pairs: P >= 1 view pairs (:func:`target_pairs` or :func:`view_pairs`).

    Returns:
        The 0-d combined loss.
    """
    if not pairs:
        raise ValueError("mean_over_pairs needs one pair or more")
    total = loss(*pairs[0])
    for a, b in pairs[1:]:
        total = total + loss(a, b)
    return total * (scale / len(pairs))


__all__ = ["FULL_SIZE_VIEWS", "mean_over_pairs", "target_pairs", "view_pairs"]
