"""Two torchrun "nodes" on this machine (``--nnodes 2``, one process each, a c10d
rendezvous on 127.0.0.1) train the digits job to the weights of two processes on one
node, bitwise: what docs/distributed.md shows for several machines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.faults import runs

pytestmark = pytest.mark.slow

DIGITS = Path(__file__).resolve().parents[2] / "configs" / "digits.yaml"
SHORT = ["trainer.max_duration=1ep", "callbacks=[]"]
TIMEOUT = 240


def torchrun(*options: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *options, "-m", "loom", "train"]


def test_two_nodes_of_one_process_train_as_two_processes_on_one_node(tmp_path):
    one_node = tmp_path / "one-node"
    result = runs.run(
        [*torchrun("--standalone", "--nproc_per_node", "2"), DIGITS, *SHORT, "--run-dir", one_node],
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, runs.tail(result)

    two_nodes, endpoint = tmp_path / "two-nodes", f"127.0.0.1:{runs.free_port()}"
    rendezvous = ["--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "digits"]
    nodes = [
        runs.start(
            [
                *torchrun(
                    "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1", *rendezvous
                ),
                DIGITS,
                *SHORT,
                "--run-dir",
                two_nodes,
            ]
        )
        for node in (0, 1)
    ]
    for node, process in enumerate(nodes):
        finished = runs.finish(process, timeout=TIMEOUT)
        assert finished.returncode == 0, f"node {node}: {runs.tail(finished)}"

    def weights(run_dir):
        return torch.load(run_dir / "model.pt", weights_only=True)

    assert weights(one_node).keys() == weights(two_nodes).keys()
    for key, value in weights(one_node).items():
        assert torch.equal(weights(two_nodes)[key], value), key

    def records(run_dir):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]

    assert records(two_nodes) == records(one_node)
