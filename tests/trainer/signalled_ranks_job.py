"""Two ranks, one of them signalled: run by test_signals.py under torchrun. Rank 0
sends itself SIGTERM in batch 3; each rank writes where it stopped.

torchrun --standalone --nproc_per_node 2 tests/trainer/signalled_ranks_job.py OUT
"""

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.callbacks import Checkpoint
from loom.trainer import Callback, TrainingInterrupted
from loom.trainer.runtime import destroy_process_group


class SignalRankZero(Callback):
    def after_forward(self, state):
        if state.rank == 0 and state.timestamp.batch == 2:  # in the third batch
            os.kill(os.getpid(), signal.SIGTERM)


def main(out: Path) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 3), torch.randint(0, 2, (64,)))
    model = torch.nn.Linear(3, 2)
    trainer = Trainer(
        model, DataLoader(data, batch_size=4, shuffle=True), max_duration="10ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[SignalRankZero(), Checkpoint(out / "checkpoints", interval="1ba")],
    )  # fmt: skip
    with contextlib.suppress(TrainingInterrupted):
        trainer.fit()
    state = trainer.state
    stopped = {
        "batch": state.timestamp.batch,
        "interrupt": state.interrupt,
        "checkpoint": Path(state.checkpoint_path).name,
    }
    (out / f"rank{state.rank}.json").write_text(json.dumps(stopped))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    destroy_process_group()  # once the Trainer is out of scope
