"""Layer 4: training loop, schedules, checkpoints, history, the kNN monitor."""

from invprop.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from invprop.engine.device import resolve_device
from invprop.engine.history import HISTORY_NAME, TENSORBOARD_DIR, History
from invprop.engine.run_lock import LOCK_NAME, RunLock
from invprop.engine.run_settings import CHANGES_KEY, CONFIG_NAME, DERIVED_KEY
from invprop.engine.trainer import (
    METRICS_NAME,
    ResumePlan,
    RunResult,
    Trainer,
    config_for_resume,
)
from invprop.schedules import lr_factor

__all__ = [
    "CHANGES_KEY",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "DERIVED_KEY",
    "HISTORY_NAME",
    "LOCK_NAME",
    "METRICS_NAME",
    "TENSORBOARD_DIR",
    "History",
    "ResumePlan",
    "RunLock",
    "RunResult",
    "Trainer",
    "config_for_resume",
    "load_checkpoint",
    "lr_factor",
    "resolve_device",
    "save_checkpoint",
]
