"""Short runs on 3x8x8 images, checkpointed every batch: for the methods that act on an
image model, and their resume tests."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.callbacks import Checkpoint


def image_trainer(folder, model, algorithms, *, callbacks=(), load_path=None, duration="2ep"):
    """``model()`` trained on 40 images (5 batches an epoch), checkpointed into
    ``folder / "checkpoints"`` every batch."""
    inputs = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = (inputs.mean(dim=(2, 3)).argmax(dim=1) + (inputs[:, 0, 0, 0] > 1).long()) % 3
    torch.manual_seed(0)  # initial weights; a resumed run overwrites them
    network = model()
    return Trainer(
        network,
        DataLoader(TensorDataset(inputs, targets), batch_size=8, shuffle=True),
        DataLoader(TensorDataset(inputs[:16], targets[:16]), batch_size=8),
        max_duration=duration,
        optimizers=torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9),
        algorithms=algorithms,
        callbacks=[Checkpoint(folder / "checkpoints", interval="1ba"), *callbacks],
        device="cpu",
        seed=0,
        load_path=load_path,
    )


def weights(trainer):
    return {key: value.clone() for key, value in trainer.state.model.state_dict().items()}
