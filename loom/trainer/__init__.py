"""The core: the loop's events and plugins, the state they share, the Trainer, checkpoints.

Nothing here imports ``loom.algorithms``, ``loom.callbacks``, ``loom.config`` or torchvision.
"""

from loom.trainer.batch import (
    BatchKey,
    batch_size,
    describe_item,
    get_batch_item,
    move_to_device,
    num_batches,
    set_batch_item,
    split_batch,
    validate_batch_key,
)
from loom.trainer.checkpoint import (
    CheckpointError,
    capture_checkpoint,
    checkpoint_name,
    evaluated_model,
    exported_weights,
    load_algorithm_states,
    load_checkpoint,
    load_model_weights,
    model_state_dict,
    save_checkpoint,
    unwrap_model,
    write_checkpoint,
)
from loom.trainer.effects import CompositionError, Effect, changes, reads, restores
from loom.trainer.events import (
    Algorithm,
    Artifact,
    Callback,
    Engine,
    Event,
    Hook,
    HookTable,
    Plugin,
    add_note,
    composition,
    fire,
)
from loom.trainer.files import FileWriteError, remove_stale_temporaries, write_atomically
from loom.trainer.metrics import (
    ECE_BINS,
    EVAL_METRICS,
    EvalMetrics,
    NonFiniteLossError,
    TrainLoss,
)
from loom.trainer.predict import PREDICTION_OUTPUTS
from loom.trainer.runtime import (
    PRECISIONS,
    is_main_process,
    resolve_device,
    seed_everything,
    use_deterministic_algorithms,
)
from loom.trainer.sharding import STRATEGIES, Strategy
from loom.trainer.signals import TrainingInterrupted
from loom.trainer.state import Duration, State, Timestamp, TimeUnit
from loom.trainer.trainer import Trainer

__all__ = [
    "ECE_BINS",
    "EVAL_METRICS",
    "PRECISIONS",
    "PREDICTION_OUTPUTS",
    "STRATEGIES",
    "Algorithm",
    "Artifact",
    "BatchKey",
    "Callback",
    "CheckpointError",
    "CompositionError",
    "Duration",
    "Effect",
    "Engine",
    "EvalMetrics",
    "Event",
    "FileWriteError",
    "Hook",
    "HookTable",
    "NonFiniteLossError",
    "Plugin",
    "State",
    "Strategy",
    "TimeUnit",
    "Timestamp",
    "TrainLoss",
    "Trainer",
    "TrainingInterrupted",
    "add_note",
    "batch_size",
    "capture_checkpoint",
    "changes",
    "checkpoint_name",
    "composition",
    "describe_item",
    "evaluated_model",
    "exported_weights",
    "fire",
    "get_batch_item",
    "is_main_process",
    "load_algorithm_states",
    "load_checkpoint",
    "load_model_weights",
    "model_state_dict",
    "move_to_device",
    "num_batches",
    "reads",
    "remove_stale_temporaries",
    "resolve_device",
    "restores",
    "save_checkpoint",
    "seed_everything",
    "set_batch_item",
    "split_batch",
    "unwrap_model",
    "use_deterministic_algorithms",
    "validate_batch_key",
    "write_atomically",
    "write_checkpoint",
]
