"""Two ranks whose clocks differ (rank 1 starts 0.5 s later) under one max_time: run by
test_monitors.py under torchrun; each rank writes where it stopped.

torchrun --standalone --nproc_per_node 2 tests/callbacks/max_time_job.py OUT
"""

import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.callbacks import MaxTime
from loom.trainer import Callback
from loom.trainer.runtime import destroy_process_group


class SlowStep(Callback):
    def batch_end(self, state):
        time.sleep(0.02)


def main(out: Path) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 3), torch.randint(0, 2, (64,)))
    model = torch.nn.Linear(3, 2)
    trainer = Trainer(
        model, DataLoader(data, batch_size=4), max_duration="100ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[SlowStep(), MaxTime("1s")],
    )  # fmt: skip
    if trainer.state.rank == 1:
        time.sleep(0.5)  # its clock starts later: alone, it would stop later
    trainer.fit()
    stopped = {"batch": trainer.state.timestamp.batch, "reason": trainer.state.stop_reason}
    (out / f"rank{trainer.state.rank}.json").write_text(json.dumps(stopped))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    destroy_process_group()  # once the Trainer is out of scope
