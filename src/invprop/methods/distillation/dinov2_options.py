"""DINOv2's additions to self-distillation (Oquab et al., 2023) as options of the methods that take them (``dino``,
``ibot``): what their settings share, and why they refuse gradient accumulation."""

from __future__ import annotations

from typing import Callable, Protocol


class DINOv2Options(Protocol):
    """A settings section with DINOv2's options: ``centering`` (``softmax``, or DINOv2's ``sinkhorn``) and
    ``koleo_weight`` (0: no KoLeo term)."""

    centering: str
    koleo_weight: float


def whole_batch_refusal(section: str) -> Callable[[DINOv2Options], str | None]:
    """The spec's ``accumulation_refused_by`` for section ``section``: why the options set refuse gradient
    accumulation (each needs the whole batch at once), or None."""

    def refusal(settings: DINOv2Options) -> str | None:
        if settings.centering == "sinkhorn":
            return f"{section}.centering=sinkhorn balances the teacher's outputs over the whole batch"
        if settings.koleo_weight:
            return f"{section}.koleo_weight finds each feature's nearest neighbour within the whole batch"
        return None

    return refusal


__all__ = ["DINOv2Options", "whole_batch_refusal"]
