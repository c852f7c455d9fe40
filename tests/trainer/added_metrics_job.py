"""Two ranks evaluating uneven shards (13 samples) with a torchmetrics F1 score, then with a
metric that does not sync: run by test_added_metrics.py under torchrun; rank 0 writes
the first evaluation's metrics, each rank the second one's error.

torchrun --standalone --nproc_per_node 2 tests/trainer/added_metrics_job.py OUT
"""

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.trainer.runtime import destroy_process_group


def f1_trainer() -> Trainer:
    """The evaluated run, 13 samples, a torchmetrics F1 score: on each rank here, in one
    process in the test that compares."""
    from torchmetrics.classification import MulticlassF1Score  # the test skips without it

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(13, 3), torch.randint(0, 3, (13,)))
    model = torch.nn.Linear(3, 3)
    return Trainer(
        model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4),
        max_duration="1ba", device="cpu", optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        eval_metrics={"f1": MulticlassF1Score(num_classes=3)},
    )  # fmt: skip


def main(out: Path) -> None:
    trainer = f1_trainer()
    metrics = trainer.eval()
    if trainer.state.rank == 0:
        (out / "metrics.json").write_text(json.dumps(metrics))
    trainer.eval_metrics.metrics = {"samples": Count()}  # its own shard's count on each rank
    try:
        trainer.eval()
    except ValueError as error:
        (out / f"error{trainer.state.rank}.txt").write_text(str(error))


class Count:
    """A metric without torchmetrics (the protocol: reset, update, compute) that counts
    its own rank's samples alone."""

    def reset(self):
        self.samples = 0

    def update(self, outputs, targets):
        self.samples += len(targets)

    def compute(self):
        return self.samples


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    destroy_process_group()  # once the Trainer is out of scope
