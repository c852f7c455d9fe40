"""SWA: the average equals AveragedModel driven by hand, SWALR holds the learning rate, and
BatchNorm is recomputed for the average at the end."""

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import SWA, LabelSmoothing, OnlineLabelSmoothing
from loom.trainer import Callback

EPOCHS = 4


class Snapshots(Callback):
    """A copy of the model at every epoch end, and each batch's learning rate."""

    def __init__(self):
        self.models, self.rates = [], []

    def batch_start(self, state):  # after SWA, which sets the rate here
        self.rates.append(state.optimizers[0].param_groups[0]["lr"])

    def epoch_end(self, state):
        self.models.append(copy.deepcopy(state.model))


def dataset():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, 4, generator=generator)
    return TensorDataset(inputs, (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long())


def make_trainer(algorithms, callbacks=(), max_duration=f"{EPOCHS}ep", shuffle=True, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    return Trainer(
        model,
        DataLoader(dataset(), batch_size=8, shuffle=shuffle),
        DataLoader(dataset(), batch_size=20),
        max_duration=max_duration,
        optimizers=optimizer,
        # Steps the rate every batch: SWALR must hold it anyway once SWA starts.
        schedulers=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9),
        algorithms=algorithms,
        callbacks=list(callbacks),
        device="cpu",
        seed=0,
        **kwargs,
    )


def test_the_average_equals_averaged_model_driven_by_hand():
    swa, snapshots = SWA(start_epoch=1), Snapshots()
    make_trainer([swa], [snapshots]).fit()
    by_hand = AveragedModel(snapshots.models[0])
    for model in snapshots.models[1:]:  # the ends of epochs 1, 2 and 3
        by_hand.update_parameters(model)
    assert int(swa.averaged.n_averaged) == EPOCHS - 1
    for mine, theirs in zip(swa.model.parameters(), by_hand.module.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_swalr_sets_the_learning_rate_from_the_start_epoch():
    snapshots = Snapshots()
    make_trainer(
        [SWA(start_epoch=2, swa_lr=0.05, anneal_epochs=1, anneal_strategy="linear")],
        [snapshots],
    ).fit()
    rates = snapshots.rates
    assert rates[:10] == pytest.approx([0.2 * 0.9**step for step in range(10)])  # StepLR's
    # From epoch 2: SWALR, made there, anneals from the rate then to 0.05 in one epoch.
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2 * 0.9**10)
    by_hand = SWALR(optimizer, swa_lr=0.05, anneal_epochs=1, anneal_strategy="linear")
    expected = []
    for _ in range(2):
        expected += [optimizer.param_groups[0]["lr"]] * 5
        optimizer.step()  # as in a run: SWALR warns of a scheduler stepped before its optimizer
        by_hand.step()
    assert rates[10:] == pytest.approx(expected)
    assert rates[-1] == pytest.approx(0.05)


def test_batch_norm_is_recomputed_for_the_average_and_it_is_evaluated_and_exported():
    swa = SWA(start_epoch=2)
    trainer = make_trainer([swa], shuffle=False)
    metrics = trainer.fit()
    by_hand = copy.deepcopy(swa.model)
    update_bn(DataLoader(dataset(), batch_size=8), by_hand)
    for statistic in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(swa.model[1], statistic), getattr(by_hand[1], statistic))
    assert not torch.equal(swa.model[1].running_mean, trainer.state.model[1].running_mean)
    model = copy.deepcopy(swa.model)
    alone = Trainer(
        model, [], DataLoader(dataset(), batch_size=20), max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0), device="cpu",
    ).eval()  # fmt: skip
    assert metrics["eval/swa/accuracy"] == alone["eval/accuracy"]
    assert trainer.state.export_model is swa.model


def test_swa_makes_the_average_s_metrics_the_run_s_final_ones():
    swa = SWA(start_epoch=2, evaluate="swa")
    trainer = make_trainer([swa], shuffle=False)
    metrics = trainer.fit()
    assert not any(key.startswith("eval/swa/") for key in metrics)
    model = copy.deepcopy(swa.model)
    alone = Trainer(
        model, [], DataLoader(dataset(), batch_size=20), max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0), device="cpu",
    ).eval()  # fmt: skip
    assert metrics["eval/loss"] == pytest.approx(alone["eval/loss"], abs=1e-7)
    inputs = dataset().tensors[0]
    swa.model.eval()
    assert torch.equal(trainer.predict([(inputs,)]), swa.model(inputs).detach())


def test_the_pass_over_the_data_leaves_the_generators_as_they_were():
    class RandomAtTheEnd(Callback):
        def fit_end(self, state):  # after SWA's: what a checkpoint saved there would hold
            self.draw = torch.rand(3)

    after_swa, no_pass = RandomAtTheEnd(), RandomAtTheEnd()
    make_trainer([SWA(start_epoch=3, export=False)], [after_swa]).fit()
    # The same run without the pass (which shuffles the data): the same draw after it.
    trainer = make_trainer([SWA(start_epoch=3, export=False)], [no_pass])
    trainer.state.algorithms[0]._update_batch_norm = lambda state: None
    trainer.fit()
    assert torch.equal(no_pass.draw, after_swa.draw)


@pytest.mark.parametrize(
    "smoothing", [lambda: LabelSmoothing(0.1), lambda: OnlineLabelSmoothing(3)]
)
def test_it_composes_with_label_smoothing(smoothing):
    for algorithms in ([smoothing(), SWA(1, swa_lr=0.05)], [SWA(1, swa_lr=0.05), smoothing()]):
        metrics = make_trainer(algorithms, max_duration="2ep").fit()
        assert metrics["eval/swa/accuracy"] > 0.4


def test_a_start_past_the_end_is_refused_and_one_never_reached_is_warned_of():
    with pytest.raises(ValueError, match="SWA: start_epoch=4 is not below max_duration=4ep"):
        make_trainer([SWA(start_epoch=4)])
    trainer = make_trainer([SWA(start_epoch=4)], max_duration="6ba")
    with pytest.warns(UserWarning, match="SWA averaged no epoch: training ended after 1 epochs"):
        trainer.fit()
    assert trainer.state.export_model is None


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"start_epoch": -1}, ValueError, "SWA: start_epoch=-1 must be a whole number >= 0"),
        ({"start_epoch": 1, "swa_lr": 0}, ValueError, "SWA: swa_lr=0 must be a positive"),
        ({"start_epoch": 1, "anneal_strategy": "step"}, ValueError, "SWA: anneal_strategy="),
        ({"start_epoch": 1, "anneal_epochs": 1.5}, ValueError, "SWA: anneal_epochs=1.5"),
        ({"start_epoch": 1, "evaluate": "ema"}, ValueError, "SWA: evaluate='ema'"),
    ],
)
def test_bad_arguments_are_named(arguments, error, message):
    with pytest.raises(error, match=message):
        SWA(**arguments)


def test_a_checkpoint_right_after_a_resume_keeps_swalr_s_state():
    swa = SWA(start_epoch=0, swa_lr=0.05)
    trainer = make_trainer([swa], max_duration="2ep")
    trainer.fit()
    saved = swa.state_dict()
    resumed = SWA(start_epoch=0, swa_lr=0.05)
    make_trainer([resumed], max_duration="2ep")  # built: init ran, no batch yet
    resumed.load_state_dict(saved)
    assert resumed.state_dict()["schedulers"] == saved["schedulers"]
