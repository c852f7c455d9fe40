import copy
from pathlib import Path

import pytest
import yaml

from loom.config.job import SECTIONS, dump_job, resolve_job
from loom.config.job_file import read_job_file
from loom.config.schema import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))

MINIMAL = {
    "model": {"name": "mlp"},
    "data": {"train": {"name": "synthetic"}},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"max_duration": "1ep"},
}


def with_(path, value):
    """MINIMAL with the dotted ``path`` set to ``value``."""
    config = copy.deepcopy(MINIMAL)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[last] = value
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_config_resolves_and_prints_back_to_itself(path):
    job = resolve_job(read_job_file(path))
    assert list(job) == list(SECTIONS)
    assert resolve_job(yaml.safe_load(dump_job(job))) == job


def test_defaults_are_filled_and_dataset_facts_left_to_the_builder():
    job = resolve_job(MINIMAL)
    assert job["model"] == {"name": "mlp", "hidden_sizes": [256, 256], "dropout": 0.0}
    assert job["data"]["train"]["shuffle"] is True
    assert job["data"]["eval"] is None
    assert job["trainer"]["precision"] == "fp32"
    assert job["algorithms"] == []
    assert job["callbacks"] == []
    assert job["seed"] is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            with_("data.train.batchsize", 32),
            r"^data\.train\.batchsize: unknown key "
            r"\(did you mean 'batch_size'\?\); dataset 'synthetic' takes noise, num_classes, "
            r"num_samples, seed, shape, split, its loader \(dataloader\) takes batch_size, "
            r"drop_last, num_workers, shuffle, loader chooses dataloader or memory, and wrap "
            r"lists wrappers\.$",
        ),
        (
            with_("algorithms", [{"name": "label_smoothing", "smoothing": 0.1, "smoothin": 0.2}]),
            r"^algorithms\.0\.smoothin: unknown key \(did you mean 'smoothing'\?\)",
        ),
        (
            with_("model.name", "small_cn"),
            r"^model\.name: unknown model 'small_cn' \(did you mean 'small_cnn'\?\); known: ",
        ),
        (with_("optimizer.lr", "fast"), r"^optimizer\.lr: expected float, got 'fast' \(str\)\.$"),
        (
            with_("scheduler", {"name": "step"}),
            r"^scheduler\.step_size: missing required argument \(step_size: duration",
        ),
        (
            with_("model", {"name": "torchvision"}),
            r"^model\.architecture: missing required argument \(architecture: str\)",
        ),
        (with_("trainr", {}), r"^trainr: unknown section \(did you mean 'trainer'\?\)"),
        ({k: v for k, v in MINIMAL.items() if k != "optimizer"}, r"^optimizer: missing section"),
        (with_("data.train", None), r"^data\.train: missing"),
        (with_("data.test", {"name": "digits"}), r"^data\.test: unknown key"),
        (
            with_("data.train.loader", "fast"),
            r"^data\.train\.loader: 'fast' is not a loader; expected 'dataloader' or 'memory'\.$",
        ),
        (
            with_("data.train", {"name": "synthetic", "loader": "memory", "num_workers": 2}),
            r"^data\.train\.num_workers: 2 is for the dataloader loader, but this section's "
            r"loader is memory, which has no num_workers; leave it out or set loader: "
            r"dataloader\.$",
        ),
        (
            with_("data.train", {"name": "digits", "random_crop_padding": 1}),
            r"^data\.train\.random_crop_padding: 1 is for the memory loader, but this section's "
            r"loader is dataloader, which has no random_crop_padding; leave it out or set "
            r"loader: memory\.$",
        ),
        (
            with_(
                "data.train",
                {
                    "name": "image_folder",
                    "root": "x",
                    "loader": "memory",
                    "random_resized_crop": True,
                },
            ),
            r"^data\.train\.random_resized_crop: the memory loader reads each sample once, so "
            r"this random transform would be drawn once for the whole run; use loader: dataloader",
        ),
        (
            with_(
                "data.eval",
                {"name": "image_folder", "root": "x", "loader": "memory", "horizontal_flip": True},
            ),
            r"^data\.eval\.horizontal_flip: the memory loader reads each sample once, so this "
            r"random transform would be drawn once for the whole run",
        ),
        (with_("model", "mlp"), r"^model: expected a mapping such as \{name: "),
        (with_("model", {"width": 3}), r"^model\.name: missing; one of cifar_resnet, mlp"),
        (with_("algorithms", {"name": "label_smoothing"}), r"^algorithms: expected a list of"),
        (with_("trainer.max_duration", 10), r"^trainer\.max_duration: expected duration"),
        (with_("trainer.loss_fn", "mse"), r"^trainer\.loss_fn: unknown key"),
        (with_("seed", "zero"), r"^seed: expected int \| None, got 'zero'"),
    ],
)
def test_each_mistake_is_one_error_naming_its_path(config, message):
    with pytest.raises(ConfigError, match=message):
        resolve_job(config)


def test_the_trainers_batch_keys_are_set_in_the_trainer_section():
    job = resolve_job(with_("trainer.target_key", "label"))
    assert job["trainer"]["target_key"] == "label"
    assert job["trainer"]["input_key"] == 0
    with pytest.raises(ConfigError, match=r"^trainer\.input_key: expected int \| str, got 1\.5"):
        resolve_job(with_("trainer.input_key", 1.5))


def test_yaml_booleans_spelled_yes_and_no_are_booleans_and_a_string_says_to_quote_them():
    """YAML reads unquoted yes/no/on/off as booleans: where a bool is wanted that is what
    a person meant; where a string is, the error says to quote it."""
    job = yaml.safe_load(
        "model: {name: mlp}\n"
        "data: {train: {name: synthetic, shuffle: no}}\n"
        "optimizer: {name: sgd, lr: 0.1, nesterov: yes, momentum: 0.9}\n"
        "trainer: {max_duration: 1ep, device: on}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"^trainer\.device: expected str, got True \(bool\) \(YAML reads unquoted yes, "
        r"no, on and off as booleans: quote a string\)\.$",
    ):
        resolve_job(job)
    job["trainer"]["device"] = "cpu"
    resolved = resolve_job(job)
    assert resolved["data"]["train"]["shuffle"] is False
    assert resolved["optimizer"]["nesterov"] is True


def test_a_job_compiles_its_model_with_the_options_it_names():
    from loom.config.build import build_job

    job = resolve_job(
        {
            "model": {"name": "mlp", "hidden_sizes": [8]},
            "data": {"train": {"name": "synthetic", "num_samples": 32, "shape": [4]}},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "trainer": {"max_duration": "2ba", "device": "cpu", "compile": {"backend": "eager"}},
        }
    )
    assert job["trainer"]["compile"] == {"backend": "eager"}
    trainer = build_job(job).trainer()
    assert trainer.state.model._compiled_call_impl is not None
    trainer.fit()
    job["trainer"]["compile"] = {"backend": "eagr"}
    with pytest.raises(
        ConfigError, match=r"^trainer: compile.backend: 'eagr' .*did you mean 'eager'"
    ):
        build_job(job).trainer()


def test_a_memory_loader_takes_the_dataset_s_own_augmentation_options():
    """Cropped and flipped batched on the device, not once per sample by the dataset."""
    train = {"name": "image_folder", "root": "x", "loader": "memory", "horizontal_flip": True}
    data = resolve_job(with_("data.train", train))["data"]["train"]
    assert data["loader"] == "memory"
    assert data["horizontal_flip"] is True
    assert data["random_crop_padding"] == 0
    assert "num_workers" not in data
    assert resolve_job(MINIMAL)["data"]["train"]["loader"] == "dataloader"


def test_one_override_switches_a_resolved_job_s_loader():
    """Another loader's keys at their defaults, as a resolved job holds them, are dropped."""
    resolved = resolve_job(with_("data.train", {"name": "digits", "batch_size": 32}))
    memory = copy.deepcopy(resolved)
    memory["data"]["train"]["loader"] = "memory"
    train = resolve_job(memory)["data"]["train"]
    assert (train["loader"], train["batch_size"]) == ("memory", 32)
    assert "num_workers" not in train
    back = copy.deepcopy(resolve_job(memory))
    back["data"]["train"]["loader"] = "dataloader"
    assert resolve_job(back) == resolved
