"""Train a small classifier with loom's Trainer, in a script of your own.

A synthetic 10-class problem (Gaussian clusters in 32 dimensions) stands in for
real data, so nothing needs downloading. Run it with ``python examples/quickstart.py``.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import loom
from loom.callbacks import MetricsLogger, ProgressBar


def clusters(num_samples: int, generator: torch.Generator) -> TensorDataset:
    centers = torch.randn(10, 32, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 10, (num_samples,), generator=generator)
    inputs = centers[targets] + torch.randn(num_samples, 32, generator=generator) * 1.6
    return TensorDataset(inputs, targets)


def main() -> dict[str, float]:
    loom.seed_everything(0)
    generator = torch.Generator().manual_seed(1)
    train_set, eval_set = clusters(4096, generator), clusters(1024, generator)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    trainer = loom.Trainer(
        model=model,
        train_dataloader=DataLoader(train_set, batch_size=64, shuffle=True),
        eval_dataloader=DataLoader(eval_set, batch_size=256),
        max_duration="5ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        callbacks=[ProgressBar(), MetricsLogger("runs/quickstart/metrics.jsonl")],
        seed=0,
    )
    metrics = trainer.fit()
    print(
        f"final eval accuracy {metrics['eval/accuracy']:.3f}; log in runs/quickstart/metrics.jsonl"
    )
    return metrics


if __name__ == "__main__":
    main()
