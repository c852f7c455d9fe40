"""Each rank's own part of a checkpoint: kept where it differs, loaded by its rank, and
refused by a run with another number of ranks where that would change the run.

The two-process save and resume runs under torchrun in tests/faults."""

import pytest
import torch

from loom.trainer import CheckpointError, capture_checkpoint
from loom.trainer.checkpoint import restore_checkpoint
from loom.trainer.rank_states import (
    gather_rank_states,
    rank_states_problem,
    rank_view,
)
from tests.conftest import tiny_trainer


def two_rank_checkpoint(rank_one):
    """A checkpoint of rank 0's entries, with rank 1's own ``rank_one``."""
    return {
        "world_size": 2,
        "rng": {"torch": torch.tensor([1, 2], dtype=torch.uint8)},
        "train_losses": {"losses": torch.tensor([0.5]), "samples": torch.tensor([4])},
        "algorithms": [{"name": "OnlineLabelSmoothing", "state": {"sums": torch.ones(2)}}],
        "callbacks": [{"name": "Checkpoint", "state": {"best": []}}],
        "timestamp": {"epoch": 1, "batch": 8, "batch_in_epoch": 0, "samples": 32},
        "ranks": [{}, rank_one],
    }


def test_each_rank_sees_its_own_entries_and_rank_zeros_where_it_has_none():
    own_sums = {"name": "OnlineLabelSmoothing", "state": {"sums": torch.zeros(2)}}
    checkpoint = two_rank_checkpoint(
        {"train_losses": {"losses": torch.tensor([0.7]), "samples": torch.tensor([4])},
         "algorithms": [own_sums]}
    )  # fmt: skip
    zero, one = rank_view(checkpoint, 0), rank_view(checkpoint, 1)
    assert torch.equal(zero["train_losses"]["losses"], torch.tensor([0.5]))
    assert torch.equal(one["train_losses"]["losses"], torch.tensor([0.7]))
    assert one["algorithms"] == [own_sums]
    assert one["rng"] is checkpoint["rng"]  # not its own: rank 0's


def test_a_plugin_list_keeps_rank_zeros_entry_where_the_rank_has_none():
    checkpoint = two_rank_checkpoint({"callbacks": [None]})
    assert rank_view(checkpoint, 1)["callbacks"] == checkpoint["callbacks"]
    own = [{"name": "Checkpoint", "state": {}}, {"name": "MetricsLogger", "state": {}}]
    checkpoint = two_rank_checkpoint({"callbacks": own})  # a callback of rank 1's alone
    assert rank_states_problem(checkpoint) is None
    assert rank_view(checkpoint, 1)["callbacks"] == own


@pytest.mark.parametrize(
    ("ranks", "problem"),
    [
        ([{}], "not one state per rank of its world_size 2"),
        ([{}, {"model": {}}], "rank 1's is not a mapping of rng, epoch_start_rng"),
        ([{}, {"algorithms": [None, None]}], "rank 1's 'algorithms' is not one state per plugin"),
    ],
    ids=["too few", "an entry ranks do not own", "a plugin too many"],
)
def test_a_malformed_ranks_entry_is_named(ranks, problem):
    checkpoint = {**two_rank_checkpoint({}), "ranks": ranks}
    assert rank_states_problem(checkpoint).startswith(problem)


def test_one_process_keeps_no_rank_states_it_would_not_need(one_process_group, tmp_path):
    """With one rank there is nothing of another's to keep (the gather of one is itself)."""
    state = tiny_trainer(tmp_path).state
    checkpoint = capture_checkpoint(state)
    assert checkpoint["world_size"] == 1
    assert "ranks" not in checkpoint
    assert gather_rank_states(checkpoint, rank=0, world_size=1) == [{}]


def test_a_mid_epoch_checkpoint_resumes_only_with_as_many_ranks(tmp_path):
    """Each rank's share of an epoch's data depends on the number of ranks: a run with
    another number refuses a checkpoint from the middle of an epoch, changing nothing."""
    trainer = tiny_trainer(tmp_path)
    trainer.fit()
    checkpoint = capture_checkpoint(trainer.state)
    checkpoint["timestamp"] = {**checkpoint["timestamp"], "batch_in_epoch": 2}
    own = {"train_losses": {"losses": torch.tensor([0.7]), "samples": torch.tensor([4])}}
    checkpoint.update(world_size=2, ranks=[{}, own])
    weights_before = [p.detach().clone() for p in trainer.state.model.parameters()]
    with pytest.raises(
        CheckpointError,
        match=r"was written by 2 processes and this run has 1: it was taken after batch 2 of "
        r"an epoch, .* Resume with 2 \(torchrun --nproc_per_node 2\)",
    ):
        restore_checkpoint(trainer.state, checkpoint, "x.pt", weights_only=False)
    assert all(
        torch.equal(a, b)
        for a, b in zip(weights_before, trainer.state.model.parameters(), strict=True)
    )
    restore_checkpoint(trainer.state, checkpoint, "x.pt", weights_only=True)  # weights: anywhere


def test_an_epoch_end_checkpoint_of_two_ranks_resumes_one_with_rank_zeros_states(tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.fit()
    checkpoint = capture_checkpoint(trainer.state)
    assert checkpoint["timestamp"]["batch_in_epoch"] == 0
    own = {"train_losses": {"losses": torch.tensor([0.7]), "samples": torch.tensor([4])}}
    checkpoint.update(world_size=2, ranks=[{}, own])
    restore_checkpoint(trainer.state, checkpoint, "x.pt", weights_only=False)
    assert torch.equal(trainer.state.train_losses.state_dict()["losses"], torch.tensor([]))
