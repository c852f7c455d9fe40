"""EMA: the average equals a float64 one by hand, is evaluated beside or instead of the
weights, and is the run's result."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import EMA, LabelSmoothing, OnlineLabelSmoothing
from loom.callbacks import Checkpoint, EarlyStopping
from loom.config.job import resolve_job
from loom.runs import RunRecorder
from loom.trainer import Callback, CheckpointError, capture_checkpoint, exported_weights
from loom.trainer.checkpoint import restore_checkpoint


class WeightsAfterEachStep(Callback):
    """The weights and buffers after every optimizer step, in float64."""

    def __init__(self):
        self.steps = []

    def batch_end(self, state):
        tensors = [*state.model.parameters(), *state.model.buffers()]
        self.steps.append([t.detach().double().clone() for t in tensors])


def classification(num_samples=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_samples, 4, generator=generator)
    return TensorDataset(inputs, (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long())


def make_trainer(algorithms, callbacks=(), model=None, max_duration="2ep", **kwargs):
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    data = classification()
    return Trainer(
        model,
        DataLoader(data, batch_size=8, shuffle=True),
        DataLoader(data, batch_size=16),
        max_duration=max_duration,
        optimizers=torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9),
        algorithms=algorithms,
        callbacks=list(callbacks),
        device="cpu",
        seed=0,
        **kwargs,
    )


@pytest.mark.parametrize(("every", "start"), [(1, 0), (2, 3)])
def test_the_average_equals_one_computed_by_hand_in_float64(every, start):
    ema, recorder = EMA(decay=0.8, every=every, start=start), WeightsAfterEachStep()
    make_trainer([ema], [recorder]).fit()
    average = None
    for batch, weights in enumerate(recorder.steps, start=1):
        if batch % every:
            continue
        if batch <= start or average is None:
            average = [w.clone() for w in weights]  # warm-up, or the first update: a copy
        else:
            average = [0.8 * a + 0.2 * w for a, w in zip(average, weights, strict=True)]
    assert len(recorder.steps) == 12
    mine = [*ema.model.parameters(), *ema.model.buffers()]
    for have, expected in zip(mine, average, strict=True):
        if have.is_floating_point():
            assert torch.allclose(have.double(), expected, rtol=0, atol=1e-6)
    running_mean = ema.model[1].running_mean
    assert not torch.allclose(running_mean, make_trainer([]).state.model[1].running_mean)


def test_both_reports_the_average_beside_the_weights():
    ema = EMA(decay=0.5)
    trainer = make_trainer([ema])
    metrics = trainer.fit()
    assert {"eval/ema/accuracy", "eval/ema/loss", "eval/ema/ece"} <= set(metrics)
    # The average's metrics are an evaluation of its weights like any other.
    alone = make_trainer([], model=copy.deepcopy(ema.model)).eval()
    assert metrics["eval/ema/accuracy"] == alone["eval/accuracy"]
    assert metrics["eval/ema/loss"] == pytest.approx(alone["eval/loss"], abs=1e-7)
    raw = make_trainer([], model=copy.deepcopy(trainer.state.model)).eval()
    assert metrics["eval/loss"] == pytest.approx(raw["eval/loss"], abs=1e-7)
    assert metrics["eval/loss"] != metrics["eval/ema/loss"]


def test_ema_evaluates_and_predicts_with_the_average_instead():
    ema = EMA(decay=0.5, evaluate="ema")
    trainer = make_trainer([ema])
    metrics = trainer.fit()
    assert not any(key.startswith("eval/ema/") for key in metrics)
    alone = make_trainer([], model=copy.deepcopy(ema.model)).eval()
    assert metrics["eval/loss"] == pytest.approx(alone["eval/loss"], abs=1e-7)
    inputs = classification().tensors[0]
    loader = DataLoader(TensorDataset(inputs), batch_size=16)
    ema.model.eval()
    assert torch.equal(trainer.predict(loader), ema.model(inputs).detach())
    assert trainer.state.model.training  # the trained model's mode is its own


def test_the_run_s_result_is_the_average(tmp_path):
    ema = EMA(decay=0.5)
    job = {
        "model": {"name": "mlp"},
        "data": {"train": {"name": "synthetic"}},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "trainer": {"max_duration": "1ep"},
    }
    trainer = make_trainer([ema], [RunRecorder(tmp_path, resolve_job(job))])
    trainer.fit()
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved.keys() == trainer.state.model.state_dict().keys()
    for key, value in ema.model.state_dict().items():
        assert torch.equal(saved[key], value)
    kept = make_trainer([EMA(export=False)])
    kept.fit()
    assert torch.equal(exported_weights(kept.state)["0.weight"], kept.state.model[0].weight)


@pytest.mark.parametrize("first", [OnlineLabelSmoothing, LabelSmoothing])
def test_it_composes_with_label_smoothing(first):
    smoothing = first(n_classes=3) if first is OnlineLabelSmoothing else first(0.1)
    for algorithms in ([smoothing, EMA(decay=0.5)], [EMA(decay=0.5), smoothing]):
        metrics = make_trainer(algorithms, max_duration="1ep").fit()
        assert metrics["eval/ema/accuracy"] > 0.4
        smoothing = copy.deepcopy(smoothing)


def test_a_checkpoint_of_another_model_s_average_is_refused_leaving_the_run_as_it_was():
    checkpoint = capture_checkpoint(make_trainer([EMA()]).state)
    other = make_trainer([EMA()], model=nn.Sequential(nn.Linear(4, 3)))
    checkpoint["algorithms"][0]["state"] = other.state.algorithms[0].state_dict()
    trainer = make_trainer([EMA()])
    ema = trainer.state.algorithms[0]
    before = copy.deepcopy(ema.model.state_dict())
    with pytest.raises(CheckpointError, match="EMA: the checkpoint's average is of another model"):
        restore_checkpoint(trainer.state, checkpoint, "other.pt", weights_only=False)
    for key, value in ema.model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"decay": 1.0}, ValueError, "EMA: decay=1.0 must be below 1"),
        ({"decay": 1.5}, ValueError, r"EMA: decay=1.5 must lie in \[0, 1\]"),
        ({"every": 0}, ValueError, "EMA: every=0 must be a whole number >= 1"),
        ({"start": -1}, ValueError, "EMA: start=-1 must be a whole number >= 0"),
        ({"evaluate": "raw"}, ValueError, "EMA: evaluate='raw'"),
        ({"export": "yes"}, TypeError, "EMA: export='yes' must be True or False"),
    ],
)
def test_bad_arguments_are_named(arguments, error, message):
    with pytest.raises(error, match=message):
        EMA(**arguments)


def test_its_model_is_there_once_a_trainer_has_it():
    with pytest.raises(RuntimeError, match="EMA builds its average at the Trainer's init"):
        EMA().model  # noqa: B018
    assert repr(EMA(decay=0.99, every=10)) == "EMA(decay=0.99, every=10)"


class AverageAccuracies(Callback):
    def __init__(self):
        self.seen = []

    def eval_end(self, state):  # after EMA's, which adds its metrics there
        self.seen.append(state.metrics["eval/ema/accuracy"])


def test_best_checkpoints_and_early_stopping_may_watch_the_average(tmp_path):
    keeper = Checkpoint(tmp_path, keep_last=1, best_metric="eval/ema/accuracy", keep_best=1)
    seen = AverageAccuracies()
    callbacks = [keeper, EarlyStopping("eval/ema/loss", patience=5), seen]
    trainer = make_trainer([EMA(decay=0.5)], callbacks, max_duration="3ep")
    trainer.fit()
    (best,) = trainer.state.best_checkpoints
    assert (best["metric"], best["value"]) == ("eval/ema/accuracy", max(seen.seen))
    assert len(seen.seen) == 3


def test_before_its_first_update_the_average_is_the_weights_as_loaded(tmp_path):
    trained = make_trainer([])
    trained.fit()
    torch.save({"model": trained.state.model.state_dict()}, tmp_path / "weights.pt")
    ema = EMA(every=100)  # no update in this run
    fine_tuned = make_trainer(
        [ema], max_duration="2ba", load_path=tmp_path / "weights.pt", load_weights_only=True
    )
    fine_tuned.fit()
    for key, value in trained.state.model.state_dict().items():
        assert torch.equal(ema.model.state_dict()[key], value), key


def test_a_user_s_own_evaluation_reports_the_weights_alone():
    trainer = make_trainer([EMA()], max_duration="1ba")
    trainer.fit()
    loader = DataLoader(classification(seed=1), batch_size=16)
    trainer.state.metrics.clear()
    trainer.eval(loader)
    assert not any(key.startswith("eval/ema/") for key in trainer.state.metrics)
