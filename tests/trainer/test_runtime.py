"""Where a run executes: devices, torchrun's environment, sharding and collectives, and
two CPU processes under torchrun on gloo (sharding, reduced metrics, OLS, resume, faults)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler

from loom import Trainer
from loom.algorithms import OnlineLabelSmoothing
from loom.callbacks import latest_checkpoint
from loom.functional import all_reduce_max, all_reduce_sum, is_distributed
from loom.trainer import Algorithm, Callback, CheckpointError
from loom.trainer.runtime import (
    EvalShardSampler,
    TorchrunSetupError,
    available_cpus,
    check_restarts_can_rejoin,
    cpu_threads_for,
    is_main_process,
    join_torchrun_job,
    repeated_samples,
    shard_eval_loader,
    shard_train_loader,
)
from tests.conftest import TWO_PROCESS_TORCHRUN

sys.path.insert(0, str(Path(__file__).parent))
import distributed_job
import uneven_shards_job

SCRIPT = Path(__file__).with_name("distributed_job.py")
UNEVEN_SCRIPT = Path(__file__).with_name("uneven_shards_job.py")

DATA = TensorDataset(torch.arange(10).float(), torch.arange(10))


def test_eval_shards_cover_every_sample_once():
    shards = [list(EvalShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(index for shard in shards for index in shard) == list(range(10))
    assert [len(shard) for shard in shards] == [4, 3, 3]


def test_loaders_are_rebuilt_with_the_ranks_share():
    train = shard_train_loader(
        DataLoader(DATA, batch_size=2, shuffle=True, drop_last=True), rank=1, world_size=2, seed=7
    )
    assert isinstance(train.sampler, DistributedSampler)
    assert (train.sampler.shuffle, train.sampler.seed, train.sampler.rank) == (True, 7, 1)
    assert (train.batch_size, train.drop_last) == (2, True)
    evaluation = shard_eval_loader(DataLoader(DATA, batch_size=4), rank=1, world_size=2)
    assert [batch[1].tolist() for batch in evaluation] == [[1, 3, 5, 7], [9]]
    mine = DataLoader(DATA, sampler=DistributedSampler(DATA, num_replicas=2, rank=0))
    assert shard_train_loader(mine, rank=0, world_size=2, seed=0) is mine


def test_loaders_loom_cannot_shard_are_named():
    with pytest.raises(
        TypeError,
        match=r"train_dataloader is a list; under torchrun each "
        r"process must read its own share",
    ):
        shard_train_loader([(1, 2)], rank=0, world_size=2, seed=0)
    weighted = DataLoader(DATA, sampler=WeightedRandomSampler([1.0] * 10, 10))
    with pytest.raises(TypeError, match=r"eval_dataloader samples with WeightedRandomSampler"):
        shard_eval_loader(weighted, rank=0, world_size=2)


def test_collectives_are_the_identity_in_one_process():
    assert not is_distributed()
    values = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(values) is values
    assert all_reduce_max(values).tolist() == [1.0, 2.0]


def test_a_world_without_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(
        RuntimeError,
        match=r"WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT "
        r"not set: start distributed runs with torchrun",
    ):
        join_torchrun_job(torch.device("cpu"))
    model = torch.nn.Linear(1, 2)
    with pytest.raises(RuntimeError, match=r"start distributed runs with torchrun"):
        Trainer(
            model,
            DataLoader(DATA, batch_size=2),
            max_duration="1ep",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            device="cpu",
        )


def test_the_main_process_is_rank_0_of_the_environment(monkeypatch):

    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()


@pytest.mark.gpu
def test_cuda_means_this_ranks_gpu_under_torchrun(monkeypatch):
    from loom.trainer import resolve_device

    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count() - 1))
    expected = torch.device("cuda", torch.cuda.device_count() - 1)
    assert resolve_device("cuda") == resolve_device("auto") == expected
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


# Two processes under torchrun


def torchrun(*arguments, timeout=180):
    command = [*TWO_PROCESS_TORCHRUN, str(SCRIPT), *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_ranks")
    result = torchrun(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
def test_two_ranks_train_one_model_on_halves_of_the_data(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert rank0["world_size"] == rank1["world_size"] == 2
    # Wrapped after init, where a plugin may change the module (surgery, layout).
    assert rank0["model_seen"] == ["Sequential", "DistributedDataParallel"]
    assert rank0["batches"] == 3 * 5  # 70 samples, 35 a rank, batches of 8: 5 steps an epoch
    for weights in ("model", "ema", "swa"):
        for key, value in rank0[weights].items():
            assert torch.equal(value, rank1[weights][key]), (weights, key)
    # SWA's BatchNorm statistics, from each rank's share, are the ranks' mean.
    assert not torch.equal(rank0["swa"]["1.running_mean"], rank0["model"]["1.running_mean"])


@pytest.mark.slow
def test_the_averages_are_evaluated_on_every_rank_alike(two_ranks):
    _, (rank0, rank1) = two_ranks
    for name in ("ema", "swa"):
        assert (
            rank0["metrics"][f"eval/{name}/accuracy"] == rank1["metrics"][f"eval/{name}/accuracy"]
        )
        net = distributed_job.model()
        net.load_state_dict(rank0[name])
        _, eval_set = distributed_job.datasets()
        alone = Trainer(
            net, [], DataLoader(eval_set, batch_size=20), max_duration="1ep",
            optimizers=torch.optim.SGD(net.parameters(), lr=0.1), device="cpu",
        ).eval()  # fmt: skip
        assert rank0["metrics"][f"eval/{name}/loss"] == pytest.approx(alone["eval/loss"], rel=1e-5)


@pytest.mark.slow
def test_eval_metrics_equal_one_process_evaluating_everything(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert rank0["metrics"] == rank1["metrics"]
    net = distributed_job.model()
    net.load_state_dict(rank0["model"])
    _, eval_set = distributed_job.datasets()
    alone = Trainer(
        net,
        [],
        DataLoader(eval_set, batch_size=20),
        max_duration="1ep",
        optimizers=torch.optim.SGD(net.parameters(), lr=0.1),
        device="cpu",
    )
    expected = alone.eval()
    for key, value in expected.items():
        assert rank0["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.slow
def test_online_label_smoothing_matrix_is_the_same_on_every_rank(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert torch.equal(rank0["matrix"], rank1["matrix"])
    assert not torch.equal(rank0["matrix"], OnlineLabelSmoothing(n_classes=3).matrix)


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process_from_an_epochs_end(two_ranks):
    """Not from the middle of an epoch, whose shares of the data depend on the number of
    ranks (before, it resumed, with rank 0's share of the epoch's losses and sums as the
    whole's); from an epoch's end, with rank 0's states; its weights load anywhere."""
    out, _ = two_ranks
    # The last batch's save, then the epoch's end and the final evaluation: saved again.
    assert latest_checkpoint(out / "checkpoints").name == "epoch3-batch15.pt"
    train_set, _ = distributed_job.datasets()

    def resumed(checkpoint, **options):
        net = distributed_job.model()
        return Trainer(
            net,
            DataLoader(train_set, batch_size=8, shuffle=True),
            max_duration="4ep",
            optimizers=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
            algorithms=distributed_job.algorithms(),
            device="cpu",
            load_path=out / "checkpoints" / checkpoint,
            **options,
        )

    with pytest.raises(
        CheckpointError, match=r"2 processes and this run has 1: it was taken after"
    ):
        resumed("epoch1-batch6.pt")
    assert resumed("epoch1-batch6.pt", load_weights_only=True).state.timestamp.batch == 0
    alone = resumed("epoch3-batch15.pt")
    alone.fit()  # alone, an epoch takes 9 steps
    assert alone.state.timestamp.batch == 15 + 9


@pytest.mark.slow
def test_a_rank_that_raises_ends_the_job_with_its_error(tmp_path):
    started = time.monotonic()
    result = torchrun(tmp_path, 4, timeout=120)
    assert result.returncode != 0
    assert "rank 1 fails on purpose at batch 4" in result.stderr
    assert "raised by callback FailAt at event 'batch_end'" in result.stderr
    assert time.monotonic() - started < 120
    assert not (tmp_path / "rank0.pt").exists()


# Shards that do not divide the data: DistributedSampler's repeated samples


@pytest.fixture(scope="module")
def one_process_on_uneven_data():
    # The same order of samples as any number of ranks: DistributedSampler's, seeded 0.
    data = uneven_shards_job.dataset()
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    run = uneven_shards_job.trainer(DataLoader(data, batch_size=60, sampler=sampler))
    run.fit()
    return uneven_shards_job.results(run)


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3])
def test_every_sample_counts_once_whatever_the_number_of_ranks(
    ranks, tmp_path, one_process_on_uneven_data
):
    """121 samples: 1 repeated on 2 ranks, 2 on 3; the matrix and train/loss are those
    of one process, to float rounding. (Evaluation never repeats a sample: see
    test_eval_metrics_equal_one_process_evaluating_everything.)"""
    command = [*TWO_PROCESS_TORCHRUN[:-1], str(ranks), str(UNEVEN_SCRIPT), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks_saw = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(ranks)]
    alone = one_process_on_uneven_data
    for saw in ranks_saw:
        assert saw["world_size"] == ranks
        torch.testing.assert_close(saw["matrix"], alone["matrix"], rtol=0, atol=1e-6)
        assert saw["metrics"]["train/loss"] == pytest.approx(alone["metrics"]["train/loss"], 1e-6)
    assert torch.equal(ranks_saw[0]["matrix"], ranks_saw[-1]["matrix"])
    assert not torch.equal(alone["matrix"], OnlineLabelSmoothing(n_classes=3).matrix)


def test_repeated_samples_are_where_distributed_sampler_puts_them():
    data = TensorDataset(torch.arange(121))
    for ranks in (2, 3, 5):
        for rank in range(ranks):
            sampler = DistributedSampler(data, num_replicas=ranks, rank=rank, shuffle=True)
            for batch_size, drop_last in ((60 // ranks, False), (1, False), (7, True)):
                loader = DataLoader(data, batch_size, sampler=sampler, drop_last=drop_last)
                # By brute force: which of this rank's samples sit past the data in the
                # padded order (rank r's i-th sample is its (i * ranks + r)-th).
                expected = {}
                for index in range(len(loader) * batch_size if drop_last else len(sampler)):
                    if index * ranks + rank >= len(data):
                        batch = index // batch_size
                        expected[batch] = expected.get(batch, 0) + 1
                assert repeated_samples(loader) == expected, (ranks, rank, batch_size)
    assert repeated_samples(DataLoader(data, batch_size=8, shuffle=True)) == {}
    evenly = DistributedSampler(data, num_replicas=2, rank=1, drop_last=True)
    assert repeated_samples(DataLoader(data, batch_size=8, sampler=evenly)) == {}


class RecordRepeats(Callback):
    def __init__(self):
        self.seen = []

    def after_loss(self, state):
        self.seen.append((state.timestamp.batch_in_epoch, state.repeated_samples))


@pytest.mark.parametrize(
    ("grad_accum", "batch_size", "repeats_seen"),
    [(1, 4, [0, 1]), (2, 5, [0, 1])],  # a last batch of the repeat alone; a microbatch's
)
def test_a_ranks_repeats_are_left_out_of_the_matrix_and_the_training_loss(
    grad_accum, batch_size, repeats_seen
):
    """Rank 1 of 2 on 9 samples, in one process (a sampler needs no process group): its
    last sample repeats the epoch's first; the Trainer and OLS leave it out."""
    data = TensorDataset(torch.randn(9, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2]))
    sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)
    order = list(sampler)  # samples 1, 3, 5, 7 and 0 again
    assert order == [1, 3, 5, 7, 0]

    def run(loader):
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 3)
        recorder = RecordRepeats()
        trainer = Trainer(
            net, loader, max_duration="1ep", optimizers=torch.optim.SGD(net.parameters(), lr=0),
            algorithms=[OnlineLabelSmoothing(n_classes=3)], callbacks=[recorder],
            grad_accum=grad_accum, device="cpu",
        )  # fmt: skip
        return trainer.fit(), trainer.state.algorithms[0], recorder.seen

    metrics, algorithm, seen = run(DataLoader(data, batch_size=batch_size, sampler=sampler))
    assert [repeats for _, repeats in seen] == repeats_seen
    without_repeat = torch.utils.data.Subset(data, order[:4])
    expected_metrics, expected, _ = run(DataLoader(without_repeat, batch_size=4))
    torch.testing.assert_close(algorithm.matrix, expected.matrix, rtol=0, atol=1e-7)
    assert metrics["train/loss"] == pytest.approx(expected_metrics["train/loss"], rel=1e-6)


class ScaleLoss(Algorithm):
    def before_backward(self, state):
        state.loss = state.loss * 10


class RecordLossesAndEvalRepeats(Callback):
    def __init__(self):
        self.losses, self.eval_repeats = [], []

    def after_backward(self, state):
        self.losses.append((state.loss.item(), len(state.outputs) - state.repeated_samples))

    def eval_batch_end(self, state):
        self.eval_repeats.append(state.repeated_samples)


def test_a_loss_a_plugin_changed_stands_for_its_batch_and_evaluation_repeats_nothing():
    """The default loss is recomputed without the repeats only when no plugin changed it:
    a changed loss's batch mean stands, weighted by the samples that count."""
    data = TensorDataset(torch.randn(9, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2]))
    sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)  # 5: 3 + 2
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    recorder = RecordLossesAndEvalRepeats()
    metrics = Trainer(
        net, DataLoader(data, batch_size=3, sampler=sampler), DataLoader(data, batch_size=3),
        max_duration="1ep", optimizers=torch.optim.SGD(net.parameters(), lr=0),
        algorithms=[ScaleLoss()], callbacks=[recorder], device="cpu",
    ).fit()  # fmt: skip
    assert [counted for _, counted in recorder.losses] == [3, 1]
    expected = sum(loss * counted for loss, counted in recorder.losses) / 4
    assert metrics["train/loss"] == pytest.approx(expected, rel=1e-6)
    assert recorder.eval_repeats == [0, 0, 0]


@pytest.fixture
def torch_threads():
    """Puts torch's thread count back as it was: a Trainer sets it for the process."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_auto_threads_are_half_the_cpus_this_process_may_use(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert cpu_threads_for("auto", cpu) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert cpu_threads_for("auto", cpu) == 1  # taskset -c 3: one CPU, one thread
    assert cpu_threads_for("auto", torch.device("cuda", 0)) is None  # the GPU does the work
    assert (cpu_threads_for(3, cpu), cpu_threads_for(None, cpu)) == (3, None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # said by the person, or by torchrun
    assert cpu_threads_for("auto", cpu) is None


def test_the_trainer_sets_the_threads_asked_for_and_refuses_a_bad_count(torch_threads):
    model = torch.nn.Linear(2, 2)
    batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    arguments = {"max_duration": "1ba", "optimizers": optimizer, "device": "cpu"}
    Trainer(model, batches, cpu_threads=3, **arguments)
    assert torch.get_num_threads() == 3
    Trainer(model, batches, cpu_threads=None, **arguments)
    assert torch.get_num_threads() == 3  # left as it was
    for bad in (0, 1.5, "all"):
        with pytest.raises(ValueError, match=rf"cpu_threads={bad!r} must be an int >= 1, 'auto'"):
            Trainer(model, batches, cpu_threads=bad, **arguments)
    assert torch.get_num_threads() == 3  # checked before anything changes


def test_a_job_trains_with_the_threads_it_says_and_an_explicit_omp_num_threads_stands(
    tmp_path,
):
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: {name: mlp, hidden_sizes: [8]}\n"
        "data: {train: {name: synthetic, num_samples: 32, shape: [4], batch_size: 16}}\n"
        "optimizer: {name: sgd, lr: 0.1}\n"
        "trainer: {max_duration: 1ep, device: cpu}\n"
    )
    without_omp = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    torch_count = int(  # what torch makes of OMP_NUM_THREADS=2 here, which loom leaves
        subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
            env={**without_omp, "OMP_NUM_THREADS": "2"}, capture_output=True, check=True,
        ).stdout
    )  # fmt: skip
    for environment, override, threads in [
        (without_omp, "trainer.cpu_threads=3", 3),
        (without_omp, "trainer.cpu_threads=auto", max(1, available_cpus() // 2)),
        ({**without_omp, "OMP_NUM_THREADS": "2"}, "trainer.cpu_threads=auto", torch_count),
    ]:
        run_dir = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        command = [sys.executable, "-m", "loom", "train", str(job), override]
        result = subprocess.run(
            [*command, "--run-dir", str(run_dir)],
            env=environment, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads((run_dir / "summary.json").read_text())["cpu_threads"] == threads


def test_what_rank_zero_cannot_send_every_rank_is_sent_as_an_error(monkeypatch):
    """Before, an answer that cannot be pickled raised on rank 0 alone, in the broadcast,
    and left the other ranks waiting for it."""
    import pickle

    import torch.distributed as dist

    from loom.trainer.runtime import decided_by_rank_zero

    sent = []

    def broadcast(objects, src):  # what gloo would do: pickle them to the other ranks
        sent.append(pickle.loads(pickle.dumps(objects)))

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    with pytest.raises(RuntimeError, match=r"cannot be sent to every rank"):
        decided_by_rank_zero(lambda: lambda: None, "a decision")
    (kind, _), *_ = sent[0]
    assert kind == "error"


TWO_NODE_WORKER = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "TORCHELASTIC_MAX_RESTARTS": "3"}


@pytest.mark.parametrize(
    ("environment", "refused"),
    [
        ({**TWO_NODE_WORKER, "TORCHELASTIC_USE_AGENT_STORE": "True"}, True),
        ({**TWO_NODE_WORKER, "TORCHELASTIC_USE_AGENT_STORE": "False"}, False),  # not shared
        ({**TWO_NODE_WORKER, "TORCHELASTIC_MAX_RESTARTS": "0"}, False),  # never restarts
        (
            {**TWO_NODE_WORKER, "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_USE_AGENT_STORE": "True"},
            False,
        ),
    ],
    ids=["nodes-restarts-shared", "own-stores", "no-restarts", "one-node"],
)
def test_restarts_across_nodes_through_a_shared_store_are_refused_saying_what_to_set(
    monkeypatch, environment, refused
):
    """Before, their workers timed out connecting after the first restart (tested with
    two agents in tests/faults/test_elastic.py)."""
    for name in ("TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_MAX_RESTARTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if not refused:
        check_restarts_can_rejoin()
        return
    with pytest.raises(
        TorchrunSetupError,
        match=r"--max-restarts 3 across nodes \(2 processes, 1 on this one\).*"
        r"Set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torchrun's environment on every node",
    ):
        check_restarts_can_rejoin()
