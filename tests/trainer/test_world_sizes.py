"""Determinism across world sizes: 2 ranks of batch 32 train the model 1 rank of batch 64
does, to float rounding (DDP averages the ranks' gradients, summed in another order);
online label smoothing's matrix, the training loss and the evaluation metrics count
every sample once whatever the number of ranks."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TWO_PROCESS_TORCHRUN

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("world_size_job.py")
TOLERANCE = 1e-5  # on the weights after 16 steps; docs/distributed.md states it


def run(start, out, batch_size):
    command = [*start, str(SCRIPT), str(out), str(batch_size)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_ranks_of_half_the_batch_train_as_one_rank_of_the_whole(tmp_path):
    run([sys.executable], tmp_path, 64)
    run(TWO_PROCESS_TORCHRUN, tmp_path, 32)
    one, two = (torch.load(tmp_path / f"world{n}.pt", weights_only=True) for n in (1, 2))
    assert one["steps"] == two["steps"] == 16  # 4 epochs of 256 samples, 64 a step
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(two["matrix"], one["matrix"], rtol=0, atol=TOLERANCE)
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["metrics"].keys() == one["metrics"].keys()
    for name, value in one["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
