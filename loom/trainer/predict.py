"""Prediction: the model's outputs for every sample of a dataset, in the dataset's order.

:meth:`Trainer.predict <loom.trainer.Trainer.predict>` calls :func:`predictions` with
the run's state: its model, device, precision and ``input_key``. The model runs in
eval mode without gradients, and goes back to the mode it was in.

Under torchrun every rank predicts its share of the data and every rank gets all of
it back, in the dataset's order, with the samples a ``DistributedSampler`` repeats to
even the shards left out. Prediction fires no events: algorithms change training and
callbacks observe training and evaluation, and a prediction is neither (no metric is
computed, no evaluation logged or checkpointed, ``State`` is left as it was).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler

from loom.trainer.batch import batch_size, describe_item, get_batch_item, move_to_device
from loom.trainer.checkpoint import evaluated_model
from loom.trainer.events import add_note
from loom.trainer.runtime import (
    EvalShardSampler,
    broadcast_buffers,
    shard_eval_loader,
    takes_a_sampler,
)
from loom.trainer.sharding import even_out_forwards, forward_autocast, most_batches
from loom.trainer.state import State, check_dataloader

__all__ = ["PREDICTION_OUTPUTS", "predictions"]

PREDICTION_OUTPUTS = ("logits", "probabilities", "classes")
"""What :func:`predictions` can return per sample: the model's outputs as they are, their
softmax over the classes (dimension 1, in float32), or the index of the largest."""

_ARGUMENT = "predict(dataloader)"  # how the refusals name the loader


def predictions(
    state: State,
    dataloader: Iterable[Any],
    output: Literal["logits", "probabilities", "classes"] = "logits",
) -> torch.Tensor:
    """The model's ``output`` for every sample of ``dataloader``, one row per sample, as
    one CPU tensor.

    The rows are in the dataset's order for a torch DataLoader over a dataset with a
    length, or a :class:`~loom.data.memory_loader.MemoryLoader`, that samples with
    ``shuffle=False``, ``shuffle=True`` (read in order for this) or a
    ``DistributedSampler``; any other iterable's rows (a list of batches, a sampler of
    one's own) are in the order it yields them, in one process. Under
    torchrun every rank must call this, and each gets every row.

    Raises:
        ValueError: ``output`` is not one of :data:`PREDICTION_OUTPUTS`, the outputs
            are not class scores (at least 2-D) where ``output`` needs them, the loader
            drops samples (``drop_last``) or yields none, its ``DistributedSampler``
            shards for another world than the run's, a batch's outputs have another
            number of rows than its inputs have samples, or a DataLoader's batches hold
            another number of rows than its sampler reads samples (a ``collate_fn`` that
            adds or drops rows).
        TypeError: The model's outputs are not a tensor, or (under torchrun) the loader
            is one loom cannot shard.
    """
    if output not in PREDICTION_OUTPUTS:
        raise ValueError(f"output={output!r} is not one of {', '.join(PREDICTION_OUTPUTS)}.")
    check_dataloader(dataloader, "dataloader")
    loader, samples_read, indices = _in_order(dataloader, state.rank, state.world_size)
    # Without DistributedDataParallel's wrapper, whose forward may broadcast buffers:
    # ranks predict different numbers of batches. Its buffers are rank 0's, as in eval.
    model = evaluated_model(state)  # the weights evaluations use (an EMA's, when chosen)
    was_training = model.training
    model.eval()
    try:
        if state.world_size > 1:
            broadcast_buffers(model)
        mine = _predict_batches(state, model, loader, output)
    finally:
        model.train(was_training)
    if samples_read is not None:
        mine = _without_repeats(mine, samples_read, indices)
    return _in_dataset_order(mine, indices, state.world_size)


def _in_order(
    dataloader: Iterable[Any], rank: int, world_size: int
) -> tuple[Iterable[Any], int | None, Sequence[int] | None]:
    """The loader to read; how many samples its sampler reads, repeats included (None
    when it cannot be known: a list of batches, a sampler of one's own); and the dataset
    index of each sample it yields in turn (None: the rows stay in the order the loader
    yields them). Samples it reads past the indices are a ``DistributedSampler``'s
    repeats."""
    sampler = getattr(dataloader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        if (sampler.num_replicas, sampler.rank) != (world_size, rank):
            raise ValueError(
                f"{_ARGUMENT}: its DistributedSampler is rank {sampler.rank} of "
                f"{sampler.num_replicas}, but this process is rank {rank} of {world_size}; "
                "pass a loader with shuffle=False and loom shards it."
            )
        _refuse_drop_last(dataloader, sampler.drop_last)
        # Rank r's i-th sample is the (i * world_size + r)-th of the padded order, whose
        # positions from len(dataset) on repeat the first ones: those come last.
        real = len(range(rank, len(sampler.dataset), world_size))
        return dataloader, len(sampler), list(sampler)[:real]
    in_dataset_order = isinstance(sampler, SequentialSampler | RandomSampler | EvalShardSampler)
    if takes_a_sampler(dataloader) and dataloader.batch_size and in_dataset_order:
        _refuse_drop_last(dataloader, False)
        if world_size == 1 and isinstance(sampler, SequentialSampler):
            return dataloader, len(sampler), None  # in order already
        sharded = shard_eval_loader(dataloader, rank, world_size, argument=_ARGUMENT)
        shard = sharded.sampler.indices  # a loader sharded already (a Trainer's) is kept
        if (shard.start, shard.step) != (rank, world_size):
            raise ValueError(
                f"{_ARGUMENT}: its EvalShardSampler reads every {shard.step}th sample from "
                f"{shard.start}, but this process is rank {rank} of {world_size}; pass the "
                "unsharded loader."
            )
        return sharded, len(shard), shard
    if world_size > 1:
        raise TypeError(
            f"{_ARGUMENT}: under torchrun each process predicts its own share of the data "
            "and loom gathers them in order: pass a torch DataLoader or a MemoryLoader with "
            "shuffle=False (loom shards it) or a DistributedSampler, not a "
            f"{type(dataloader).__name__}"
            + (f" sampling with {type(sampler).__name__}." if sampler is not None else ".")
        )
    return dataloader, None, None


def _refuse_drop_last(loader: Any, sampler_drops: bool) -> None:
    if loader.drop_last or sampler_drops:
        where = "its DistributedSampler" if sampler_drops else f"the {type(loader).__name__}"
        raise ValueError(
            f"{_ARGUMENT}: {where} has drop_last=True, so the last samples would get no "
            "prediction; pass drop_last=False."
        )


def _predict_batches(
    state: State, model: nn.Module, loader: Iterable[Any], output: str
) -> torch.Tensor | None:
    """This process's rows, in the order the loader yields them; None if it yields none."""
    autocast = forward_autocast(model, state.precision, state.device)
    rows = []
    inputs, number = None, 0
    most = most_batches(model, loader, state.device)  # a sharded model's ranks agree
    with torch.no_grad():
        for number, batch in enumerate(loader, start=1):
            try:
                inputs = get_batch_item(batch, state.input_key)
            except Exception as error:
                add_note(error, f"reading the inputs (input_key) at batch {number} of predict")
                raise
            if state.device.type != "cpu":
                inputs = move_to_device(inputs, state.device)
            try:
                if autocast is None:
                    outputs = model(inputs)
                else:
                    with autocast:
                        outputs = model(inputs)
            except Exception as error:
                add_note(
                    error,
                    f"raised by the model's forward at batch {number} of predict, "
                    f"inputs {describe_item(inputs)}",
                )
                raise
            outputs = _as_output(outputs, output, number)
            _check_rows(outputs, inputs, number)
            # On the CPU batch by batch: the whole dataset's outputs may not fit the device.
            rows.append(outputs.cpu())
        even_out_forwards(model, number, most, inputs)
    return torch.cat(rows) if rows else None


def _as_output(outputs: Any, output: str, number: int) -> torch.Tensor:
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(
            f"predict collects the model's outputs as one tensor, but at batch {number} its "
            f"forward returned a {type(outputs).__name__}."
        )
    if output == "logits":
        return outputs
    if outputs.dim() < 2:
        raise ValueError(
            f"output={output!r} reads class scores along dimension 1, but at batch {number} "
            f"the model's outputs are {describe_item(outputs)}; use output='logits'."
        )
    if output == "probabilities":
        return outputs.float().softmax(dim=1)
    return outputs.argmax(dim=1)


def _check_rows(outputs: torch.Tensor, inputs: Any, number: int) -> None:
    """Refuses a batch's outputs without one row per sample of its inputs (where their
    count is known): rows of another count would go to the wrong samples."""
    samples = _num_samples(inputs)
    rows = outputs.shape[0] if outputs.dim() > 0 else 0
    if samples is not None and rows != samples:
        raise ValueError(
            f"predict takes a row of outputs per sample, but at batch {number} the model's "
            f"forward returned {rows} row{'' if rows == 1 else 's'} for {samples} "
            f"sample{'' if samples == 1 else 's'}: outputs {describe_item(outputs)} for "
            f"inputs {describe_item(inputs)}."
        )


def _num_samples(inputs: Any) -> int | None:
    """The samples in a batch's inputs: a tensor's first dimension, or the one that the
    tensors of a dict, list or tuple share; None where that cannot be told."""
    if isinstance(inputs, Mapping):
        items = list(inputs.values())
    elif isinstance(inputs, list | tuple):
        items = list(inputs)
    else:
        items = [inputs]
    sizes = {
        batch_size(item) for item in items if isinstance(item, torch.Tensor) and item.dim() > 0
    }
    return sizes.pop() if len(sizes) == 1 else None


def _without_repeats(
    rows: torch.Tensor | None, samples_read: int, indices: Sequence[int] | None
) -> torch.Tensor | None:
    """This process's rows, one per sample its sampler read, with a
    ``DistributedSampler``'s repeats (the samples past ``indices``) dropped."""
    count = 0 if rows is None else len(rows)
    if count != samples_read:
        raise ValueError(
            f"{_ARGUMENT}: the loader's batches hold {count} rows where its sampler read "
            f"{samples_read} samples; predict takes one row per sample, so each row's "
            "sample would be unknown: does its collate_fn add or drop rows?"
        )
    if rows is None or indices is None or len(indices) == count:
        return rows
    return rows[: len(indices)]


def _in_dataset_order(
    mine: torch.Tensor | None, indices: Sequence[int] | None, world_size: int
) -> torch.Tensor:
    """Every process's rows (this one's alone outside torchrun), each at its sample's index."""
    shards: list[Any] = [(indices, mine)]
    if world_size > 1:
        shards = [None] * world_size
        # Pickled: once per prediction, and it carries ranks' rows of differing counts.
        dist.all_gather_object(shards, (indices, mine))
    present = [(shard, rows) for shard, rows in shards if rows is not None]
    if not present:
        raise ValueError(f"{_ARGUMENT}: the loader yielded no batches; nothing to predict.")
    rows = torch.cat([rows for _, rows in present])
    if indices is None:  # one process, read in the loader's order
        return rows
    positions = torch.cat([torch.as_tensor(shard, dtype=torch.long) for shard, _ in present])
    ordered = rows.new_empty((len(rows), *rows.shape[1:]))
    ordered[positions] = rows
    return ordered
