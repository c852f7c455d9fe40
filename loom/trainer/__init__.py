"""The event vocabulary, the state plugins share, the engine and the Trainer.

Nothing here imports ``loom.algorithms``, ``loom.callbacks``, ``loom.config`` or torchvision.
"""

from loom.trainer.batch import (
    BatchKey,
    batch_size,
    get_batch_item,
    move_to_device,
    set_batch_item,
    split_batch,
    validate_batch_key,
)
from loom.trainer.checkpoint import (
    CheckpointError,
    NonFiniteLossError,
    capture_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from loom.trainer.device import resolve_device, seed_everything, use_deterministic_algorithms
from loom.trainer.duration import Duration, Timestamp, TimeUnit
from loom.trainer.engine import Engine, Hook, HookTable, fire
from loom.trainer.errors import add_note
from loom.trainer.event import Event
from loom.trainer.interrupts import TrainingInterrupted
from loom.trainer.metrics import ECE_BINS, EvalMetrics, TrainLoss
from loom.trainer.plugin import Algorithm, Callback, Plugin
from loom.trainer.precision import PRECISIONS
from loom.trainer.state import State
from loom.trainer.trainer import Trainer

__all__ = [
    "ECE_BINS",
    "PRECISIONS",
    "Algorithm",
    "BatchKey",
    "Callback",
    "CheckpointError",
    "Duration",
    "Engine",
    "EvalMetrics",
    "Event",
    "Hook",
    "HookTable",
    "NonFiniteLossError",
    "Plugin",
    "State",
    "TimeUnit",
    "Timestamp",
    "TrainLoss",
    "Trainer",
    "TrainingInterrupted",
    "add_note",
    "batch_size",
    "capture_checkpoint",
    "fire",
    "get_batch_item",
    "load_checkpoint",
    "move_to_device",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "set_batch_item",
    "split_batch",
    "use_deterministic_algorithms",
    "validate_batch_key",
]
