"""Layer 4: training loop, schedules, checkpoints, history, the kNN monitor."""

from invprop.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from invprop.engine.device import resolve_device
from invprop.engine.history import HISTORY_NAME, History
from invprop.engine.trainer import CONFIG_NAME, METRICS_NAME, RunResult, Trainer, config_for_resume
from invprop.schedules import lr_factor

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "HISTORY_NAME",
    "METRICS_NAME",
    "History",
    "RunResult",
    "Trainer",
    "config_for_resume",
    "load_checkpoint",
    "lr_factor",
    "resolve_device",
    "save_checkpoint",
]
