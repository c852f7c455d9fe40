"""Fixtures the algorithms' tests share."""

import pytest
import torch.distributed as dist


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of this process alone, for DistributedDataParallel."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()
