import pytest
import torch

from loom.config.build import build_job
from loom.config.job import resolve_job
from loom.config.schema import ConfigError
from loom.data import NoisyLabels, synthetic


@pytest.mark.parametrize("kind", ["symmetric", "pairs"])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4])
def test_exactly_the_rate_of_labels_is_wrong_and_the_clean_ones_are_kept(kind, rate):
    data = synthetic(num_samples=500, num_classes=5, shape=[2])
    noisy = NoisyLabels(data, rate=rate, kind=kind, seed=3)
    assert int(noisy.flipped.sum()) == round(rate * 500)
    assert torch.equal(noisy.clean_targets, data.targets)
    assert torch.equal(noisy.flipped, noisy.targets != data.targets)
    if kind == "pairs":
        flipped = noisy.flipped
        assert torch.equal(noisy.targets[flipped], (data.targets[flipped] + 1) % 5)
    assert noisy[7][1] == noisy.targets[7]
    assert torch.equal(noisy[7][0], data[7][0])
    assert noisy.describe()["flipped"] == round(rate * 500)


def test_symmetric_noise_reaches_every_other_class_and_depends_on_the_seed_alone():
    data = synthetic(num_samples=2000, num_classes=4, shape=[1])
    first = NoisyLabels(data, rate=0.4, seed=0)
    again = NoisyLabels(data, rate=0.4, seed=0)
    other = NoisyLabels(data, rate=0.4, seed=1)
    assert torch.equal(first.targets, again.targets)
    assert not torch.equal(first.targets, other.targets)
    shifts = (first.targets - data.targets) % 4
    assert set(shifts[first.flipped].tolist()) == {1, 2, 3}


def test_bad_noise_is_named():
    data = synthetic(num_samples=10, num_classes=2, shape=[1])
    with pytest.raises(ValueError, match=r"label_noise rate=1\.0 must be a fraction in \[0, 1\)"):
        NoisyLabels(data, rate=1.0)
    with pytest.raises(TypeError, match=r"needs the dataset's labels as a `targets` attribute"):
        NoisyLabels([(torch.zeros(1), 0)], rate=0.1, num_classes=2)


JOB = {
    "model": {"name": "mlp", "hidden_sizes": [8]},
    "data": {
        "train": {
            "name": "synthetic",
            "num_samples": 100,
            "num_classes": 4,
            "shape": [3],
            "wrap": [{"name": "label_noise", "rate": 0.3, "kind": "pairs"}],
        },
        "eval": {
            "name": "synthetic",
            "split": "test",
            "num_samples": 40,
            "num_classes": 4,
            "shape": [3],
        },
    },
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"max_duration": "1ep", "device": "cpu"},
}


def test_a_job_noises_its_training_labels_only():
    job = resolve_job(JOB)
    assert job["data"]["train"]["wrap"] == [
        {"name": "label_noise", "rate": 0.3, "kind": "pairs", "seed": 0, "num_classes": None}
    ]
    assert job["data"]["eval"]["wrap"] == []
    parts = build_job(job)
    noisy = parts.train_loader.dataset
    assert isinstance(noisy, NoisyLabels)
    assert int(noisy.flipped.sum()) == 30
    assert not isinstance(parts.eval_loader.dataset, NoisyLabels)
    eval_noise = {**JOB["data"]["eval"], "wrap": [{"name": "label_noise", "rate": 0.1}]}
    with pytest.raises(
        ConfigError,
        match=r"^data\.eval\.wrap\.0 \(label_noise\): this wrapper goes on the training",
    ):
        resolve_job({**JOB, "data": {**JOB["data"], "eval": eval_noise}})
    bad = {**JOB["data"]["train"], "wrap": [{"name": "label_noise", "rate": 0.3, "knd": "pairs"}]}
    with pytest.raises(
        ConfigError,
        match=r"^data\.train\.wrap\.0\.knd: unknown key "
        r"\(did you mean 'kind'\?\)",
    ):
        resolve_job({**JOB, "data": {**JOB["data"], "train": bad}})


def test_wrappers_in_an_order_that_cannot_work_are_refused_naming_the_wrapper():
    wrapped = {
        **JOB["data"]["train"],
        "wrap": [{"name": "as_dict"}, {"name": "label_noise", "rate": 0.2}],
    }
    with pytest.raises(
        ConfigError,
        match=r"^data\.train\.wrap\.1 \(label_noise\): label noise needs \(input, class index\) "
        r"samples, but the dataset's are dicts; put label_noise before wrappers",
    ):
        build_job(resolve_job({**JOB, "data": {**JOB["data"], "train": wrapped}}))
