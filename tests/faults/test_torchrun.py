"""A 2-process torchrun job interrupted by SIGTERM to torchrun, then resumed under
torchrun: it ends as the uninterrupted 2-process run did, bitwise, every rank's own
state (online label smoothing's partial statistics, the epoch's losses) included."""

from __future__ import annotations

import random
import re

import pytest

from tests.faults import compare, runs

pytestmark = pytest.mark.slow


def test_sigterm_to_torchrun_mid_epoch_then_resume_under_torchrun_is_exact(
    job, torchrun_reference, tmp_path, seed, why
):
    """Rank 0, before a random training batch in the middle of an epoch, sends SIGTERM
    to torchrun's agent (once the other rank waits in the same batch), which passes it
    to both ranks: they stop together after that batch or the next and save its
    checkpoint, and the job stops. Resumed with ``torchrun ... loom train --resume
    RUN_DIR``, its weights, its final checkpoints (all entries, every rank's included),
    metrics.jsonl and the other files equal the uninterrupted 2-process run's, bitwise
    but for seconds."""
    batches = 3 * runs.BATCHES_PER_RANK_EPOCH
    # the batch, or the next one (the ranks may agree on stopping a batch later), in
    # the middle of an epoch: the ranks' own partial statistics are in the checkpoint
    mid_epoch = [n for n in range(1, batches) if n % runs.BATCHES_PER_RANK_EPOCH not in (0, 3)]
    batch = random.Random(f"{seed}-torchrun").choice(mid_epoch)
    fault = {
        "kind": "train_forward",
        "n": batch,
        "moment": "before",
        "action": "term_parent",
        "rank": 0,
    }
    message = why(fault)
    run_dir = tmp_path / "run"
    stopped = runs.train(job, run_dir, [fault], torchrun=True)
    assert stopped.returncode != 0, f"{message}: the job was not stopped; {runs.tail(stopped)}"
    saved = re.search(
        r"training stopped on SIGTERM .*checkpoint saved to (\S+\.pt)", stopped.stderr
    )
    assert saved, f"{message}: no checkpoint named; {runs.tail(stopped)}"
    stopped_after = compare.load(saved[1])["timestamp"]["batch"]
    assert stopped_after in (batch, batch + 1), f"{message}: stopped after {stopped_after}"
    compare.assert_every_file_whole(run_dir, message)
    resumed = runs.resume(run_dir, torchrun=True)
    assert resumed.returncode == 0, f"{message}: {runs.tail(resumed)}"
    compare.assert_same_run(run_dir, torchrun_reference, message)
