import copy
import functools

import pytest
import torch

from loom.algorithms import OnlineLabelSmoothing
from loom.config import DATASETS
from loom.config.build import build_job
from loom.config.job import resolve_job
from loom.config.schema import ConfigError
from loom.data import synthetic
from loom.data.memory_loader import MemoryLoader

JOB = {
    "seed": 0,
    "model": {"name": "small_cnn", "width": 4},
    "data": {
        "train": {
            "name": "synthetic",
            "num_samples": 40,
            "num_classes": 3,
            "shape": [2, 4, 4],
            "batch_size": 16,
        },
        "eval": {
            "name": "synthetic",
            "split": "test",
            "num_samples": 20,
            "num_classes": 3,
            "shape": [2, 4, 4],
        },
    },
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "scheduler": {"name": "multistep", "milestones": ["1ep", "5ba"]},
    "algorithms": [{"name": "online_label_smoothing"}],
    "trainer": {"max_duration": "2ep", "device": "cpu"},
}


def build(**changes):
    job = copy.deepcopy(JOB)
    for section, value in changes.items():
        job[section] = value
    return build_job(resolve_job(job))


def test_dataset_facts_fill_what_the_job_left_out():
    parts = build()
    assert parts.model.features[0].in_channels == 2
    assert parts.model.classifier[-1].out_features == 3
    (algorithm,) = parts.algorithms
    assert isinstance(algorithm, OnlineLabelSmoothing)
    assert algorithm.matrix.shape == (3, 3)
    assert parts.classes == ["class_0", "class_1", "class_2"]
    assert len(parts.train_loader) == 3  # 40 samples in batches of 16


def test_the_schedule_counts_epochs_in_batches():
    parts = build()
    (scheduler,) = parts.schedulers
    assert scheduler.lr_lambdas[0].milestones == [3, 5]


def test_the_job_trains_and_repeats_exactly():
    first = build().trainer().fit()
    second = build().trainer().fit()
    assert first == second
    assert set(first) >= {"train/loss", "eval/accuracy"}


def test_an_explicit_fact_wins():
    parts = build(model={"name": "mlp", "num_classes": 5, "hidden_sizes": []}, algorithms=[])
    assert parts.model.layers[-1].out_features == 5
    assert parts.model.layers[-1].in_features == 32  # 2 * 4 * 4, from the dataset


def test_constructor_errors_name_the_section():
    with pytest.raises(ConfigError, match=r"^model \(small_cnn\): dropout=1\.5 must be"):
        build(model={"name": "small_cnn", "dropout": 1.5})
    with pytest.raises(
        ConfigError,
        match=r"^data\.train \(cifar10\): dataset 'cifar10': "
        r"cifar-10-batches-py/data_batch_1, .* not found under root",
    ):
        build(data={"train": {"name": "cifar10", "root": "/nonexistent"}})
    with pytest.raises(ConfigError, match=r"^trainer: grad_accum=0 must be an int >= 1"):
        build(trainer={"max_duration": "1ep", "device": "cpu", "grad_accum": 0}).trainer()
    with pytest.raises(ConfigError, match=r"^trainer\.precision: expected 'fp32' \| 'bf16'"):
        build(trainer={"max_duration": "1ep", "precision": "fp64"})


def test_a_checkpoint_callback_outside_a_run_needs_its_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"^callbacks\.0\.folder: missing"):
        build(callbacks=[{"name": "checkpoint"}])
    job = resolve_job({**JOB, "callbacks": [{"name": "checkpoint", "interval": "2ba"}]})
    (checkpoint,) = build_job(job, checkpoint_folder=tmp_path).callbacks
    assert checkpoint.folder == tmp_path
    assert str(checkpoint.interval) == "2ba"


def test_a_dataset_without_class_names_needs_num_classes(monkeypatch):
    @functools.wraps(synthetic)  # the same signature, so the same schema
    def unnamed(**arguments):
        dataset = synthetic(**arguments)
        del dataset.classes
        return dataset

    monkeypatch.setitem(DATASETS._entries, "synthetic", unnamed)
    with pytest.raises(
        ConfigError,
        match=r"^model\.num_classes: missing, and this job cannot fill it in; set it\.",
    ):
        build(algorithms=[])


def test_a_plain_adam_optimizer_is_torchs_with_the_jobs_arguments():
    parts = build(optimizer={"name": "adam", "lr": 0.002, "betas": [0.8, 0.95]})
    optimizer = parts.optimizer
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["lr"] == 0.002
    assert tuple(optimizer.defaults["betas"]) == (0.8, 0.95)
    assert optimizer.defaults["weight_decay"] == 0  # Adam's own default, not AdamW's
    parts.trainer().fit()


def test_a_onecycle_schedule_spans_the_runs_batches_and_trains_to_its_end():
    parts = build(scheduler={"name": "onecycle", "max_lr": 0.2})
    (scheduler,) = parts.schedulers
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert scheduler.total_steps == 6  # 2 epochs of 3 batches
    trainer = parts.trainer()
    trainer.fit()  # one step a batch, to the last: torch refuses a step beyond total_steps
    assert trainer.state.timestamp.batch == 6


def test_checking_the_batch_keys_draws_nothing_the_job_would_draw():
    """The check collates the first sample, whose transform may draw random numbers; the
    generators are put back, so the model's initial weights are what they would be."""
    from torch.utils.data import DataLoader, Dataset

    from loom.config.build import _check_batch_keys

    class RandomlyAugmented(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.rand(3), index  # a random transform

    torch.manual_seed(0)
    before = torch.get_rng_state()
    _check_batch_keys(DataLoader(RandomlyAugmented()), {"input_key": 0, "target_key": 1})
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.raises(ConfigError, match=r"^trainer\.target_key: batch key 2 is out of range"):
        _check_batch_keys(DataLoader(RandomlyAugmented()), {"input_key": 0, "target_key": 2})


def test_a_onecycle_run_in_samples_steps_to_its_last_batch():
    # 40 samples in batches of 16 (16, 16, 8): 100 samples are 2 epochs and 2 batches.
    parts = build(
        scheduler={"name": "onecycle", "max_lr": 0.2},
        trainer={"max_duration": "100sp", "device": "cpu"},
    )
    assert parts.schedulers[0].total_steps == 8
    trainer = parts.trainer()
    trainer.fit()
    assert trainer.state.timestamp.batch == 8


def test_the_batch_key_check_steps_aside_where_a_sample_cannot_be_read_alone():
    from torch.utils.data import DataLoader, TensorDataset

    from loom.config.build import _check_batch_keys

    empty = DataLoader(TensorDataset(torch.zeros(0, 2)))
    _check_batch_keys(empty, {"input_key": 0, "target_key": 1})  # the first step will tell

    def needs_two(samples):
        if len(samples) < 2:
            raise ValueError("pairs only")
        return samples

    pairs = DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2, collate_fn=needs_two)
    _check_batch_keys(pairs, {"input_key": 0, "target_key": 1})


def test_a_plateau_schedule_needs_the_evaluation_it_steps_on():
    job = {
        "model": {"name": "mlp", "hidden_sizes": [8]},
        "data": {"train": {"name": "synthetic", "num_samples": 32, "shape": [4]}},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "scheduler": {"name": "plateau", "monitor": "eval/accuracy", "mode": "max"},
        "trainer": {"max_duration": "1ep", "device": "cpu"},
    }
    with pytest.raises(
        ConfigError, match=r"^scheduler \(plateau\): steps on 'eval/accuracy' after"
    ):
        build_job(resolve_job(job))
    job["data"]["eval"] = job["data"]["train"]
    (schedule,) = build_job(resolve_job(job)).schedulers
    assert (schedule.monitor, schedule.mode, schedule.patience) == ("eval/accuracy", "max", 10)


def test_training_data_smaller_than_a_batch_with_drop_last_is_named_by_its_keys():
    train = {**JOB["data"]["train"], "batch_size": 64, "drop_last": True}
    with pytest.raises(
        ConfigError,
        match=r"^data\.train\.batch_size: 64 with data\.train\.drop_last: true leaves no "
        r"training batch: the dataset has 40 samples, fewer than one batch, and drop_last "
        r"drops them; set data\.train\.batch_size to at most 40, or data\.train\.drop_last "
        r"to false\.$",
    ):
        build(data={**JOB["data"], "train": train})


def test_a_rank_s_share_smaller_than_a_batch_is_named_by_the_same_keys(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")  # as torchrun sets it: the Trainer shards by it
    train = {**JOB["data"]["train"], "drop_last": True}  # 40 samples in batches of 16
    with pytest.raises(
        ConfigError,
        match=r"^data\.train\.batch_size: 16 with data\.train\.drop_last: true leaves no "
        r"training batch: the dataset's 40 samples give each of the 4 ranks 10, fewer than "
        r"one batch, .* set data\.train\.batch_size to at most 10, or",
    ):
        build(data={**JOB["data"], "train": train})


def test_an_empty_training_dataset_is_named_before_its_first_sample_is_read(monkeypatch):
    @functools.wraps(synthetic)  # the same signature, so the same schema
    def empty(**arguments):
        return torch.utils.data.Subset(synthetic(**arguments), [])

    monkeypatch.setitem(DATASETS._entries, "synthetic", empty)
    with pytest.raises(
        ConfigError,
        match=r"^data\.train \(synthetic\): the dataset has no samples, so training would have "
        r"no batch; check its arguments",
    ):
        build()


def memory_job(**train):
    data = copy.deepcopy(JOB["data"])
    data["train"].update(loader="memory", **train)
    data["eval"]["loader"] = "memory"
    return {**copy.deepcopy(JOB), "data": data}


def test_a_memory_loader_holds_the_data_on_the_run_s_device_and_trains_as_the_dataloader():
    parts = build_job(resolve_job(memory_job()))
    assert isinstance(parts.train_loader, MemoryLoader)
    assert isinstance(parts.eval_loader, MemoryLoader)
    assert parts.train_loader.device == torch.device("cpu")
    assert (parts.train_loader.batch_size, len(parts.train_loader)) == (16, 3)
    trainer = parts.trainer()
    metrics = trainer.fit()
    reference = build().trainer()
    assert metrics == reference.fit()
    for key, value in reference.state.model.state_dict().items():
        assert torch.equal(trainer.state.model.state_dict()[key], value), key


def test_a_memory_loader_crops_and_flips_the_input_key_item():
    job = memory_job(random_crop_padding=1, horizontal_flip=True)
    job["data"]["train"]["wrap"] = [{"name": "as_dict", "keys": ["pixels", "label"]}]
    job["data"]["eval"]["wrap"] = [{"name": "as_dict", "keys": ["pixels", "label"]}]
    job["trainer"].update(input_key="pixels", target_key="label")
    loader = build_job(resolve_job(job)).train_loader
    assert (loader.input_key, loader.random_crop_padding, loader.horizontal_flip) == (
        "pixels",
        1,
        True,
    )
    as_built = memory_job()
    as_built["data"] = job["data"] | {"train": {**job["data"]["train"], "random_crop_padding": 0}}
    as_built["data"]["train"]["horizontal_flip"] = False
    as_built["trainer"] = job["trainer"]
    plain = build_job(resolve_job(as_built)).train_loader
    torch.manual_seed(0)
    augmented = next(iter(loader))
    torch.manual_seed(0)
    unchanged = next(iter(plain))
    assert augmented["pixels"].shape == unchanged["pixels"].shape == (16, 2, 4, 4)
    assert torch.equal(augmented["label"], unchanged["label"])  # the same samples
    assert not torch.equal(augmented["pixels"], unchanged["pixels"])  # cropped, flipped


def test_a_memory_loader_s_refusal_names_its_data_section():
    job = memory_job(horizontal_flip=True)
    job["data"]["train"]["wrap"] = [{"name": "as_dict", "keys": ["pixels", "label"]}]
    job["trainer"].update(input_key="image", target_key="label")
    with pytest.raises(
        ConfigError,
        match=r"^data\.train \(loader: memory\): input_key='image': the samples hold no such "
        r"item \(they have \['pixels', 'label'\]\)",
    ):
        build_job(resolve_job(job))
