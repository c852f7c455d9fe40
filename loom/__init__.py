"""loom: a small, fast, event-driven PyTorch trainer in which training methods are plugins.

Examples:
    >>> from loom import Event, Trainer
    >>> Event.BEFORE_LOSS.value
    'before_loss'
"""

from loom.trainer import (
    Algorithm,
    Callback,
    Duration,
    Event,
    State,
    Timestamp,
    Trainer,
    get_batch_item,
    seed_everything,
    set_batch_item,
)

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "Callback",
    "Duration",
    "Event",
    "State",
    "Timestamp",
    "Trainer",
    "__version__",
    "get_batch_item",
    "seed_everything",
    "set_batch_item",
]
