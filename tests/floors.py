"""What a trained run must beat, for the tests' "it learned" assertions: never an absolute number, always the same
encoder as initialised (or raw pixels)."""

from __future__ import annotations

from pathlib import Path


def untrained_knn_of(run: Path) -> float:
    """Held-out kNN top-1 of the run's encoder as initialised (same settings and seed): the floor a trained run of it
    must beat."""
    from invprop.config import from_saved
    from invprop.engine.run_settings import read_run_settings
    from invprop.evaluation.compare import untrained_knn

    settings = read_run_settings(run)
    assert settings is not None, f"{run} has no config.yaml"
    return untrained_knn(from_saved(settings.values))["knn_top1"]
