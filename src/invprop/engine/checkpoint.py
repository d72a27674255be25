"""Checkpoints: written atomically, read without executing anything from the file."""

from __future__ import annotations

import os
import pickle
import zipfile
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


def first_sentence(text: str) -> str:
    """The first sentence of an error's text, whole (not cut at a character count)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    end = line.find(". ")
    return line if end < 0 else line[: end + 1]


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only); one-line errors that say
    what is wrong with the file: missing, a folder, not a PyTorch archive, damaged, or carrying Python objects."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # what torch.save has written since PyTorch 1.6
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint (not a zip archive: another kind of file, or cut short)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} carries Python objects that loading it would run, and was refused (only tensors "
            f"and plain containers are loaded): {first_sentence(str(err).replace('Weights only load failed. ', ''))}"
        ) from None
    except Exception as err:  # noqa: BLE001 - any other failure means the file is damaged
        reason = first_sentence(str(err)) or type(err).__name__
        raise CheckpointError(f"checkpoint {path} is damaged and cannot be read ({reason})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not an invprop checkpoint (no model/config entries)")
    return state
