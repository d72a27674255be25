"""Checkpoints: written atomically, read without executing anything from the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from invprop.errors import CheckpointError
from invprop.files import write_atomically

CHECKPOINT_NAME = "last.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename, fsync the folder.

    Until the rename, ``path`` still holds the previous (last good) checkpoint, so a process killed at any moment
    leaves a loadable one; a leftover ``*.tmp`` file is never read.
    """
    write_atomically(path, lambda handle: torch.save(state, handle), durable=True)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read ({reason[:160]})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not an invprop checkpoint (no model/config entries)")
    return state
