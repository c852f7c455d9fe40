import math
import warnings

import pytest
import torch

from loom import Trainer
from loom.callbacks import Checkpoint
from loom.optim import LearningRateFactor, constant, cosine, multistep, onecycle, plateau, step
from loom.trainer import Callback


def learning_rates(make_schedule, steps, **arguments):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = make_schedule(optimizer, **arguments)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_cosine_with_warmup_matches_the_formula():
    rates = learning_rates(
        cosine, 10, batches_per_epoch=2, total_batches=10, warmup="1ep", min_lr_factor=0.1
    )
    expected = [0.5, 1.0] + [
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)
    ]
    assert rates == pytest.approx(expected)


def test_multistep_milestones_count_epochs_in_batches():
    rates = learning_rates(
        multistep, 8, batches_per_epoch=3, total_batches=8, milestones=["1ep", "7ba"], gamma=0.5
    )
    assert rates == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25])


def test_step_and_constant():
    assert learning_rates(
        step, 5, batches_per_epoch=1, total_batches=5, step_size="2ep", gamma=0.1
    ) == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert learning_rates(
        constant, 4, batches_per_epoch=1, total_batches=4, warmup="4ba"
    ) == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_a_schedule_saves_plain_data_and_resumes_exactly():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = cosine(optimizer, batches_per_epoch=2, total_batches=10)
    for _ in range(3):
        optimizer.step()
        schedule.step()
    saved = schedule.state_dict()
    assert saved["lr_lambdas"] == [vars(LearningRateFactor("cosine", total=10))]
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = cosine(other, batches_per_epoch=2, total_batches=10)
    resumed.load_state_dict(saved)
    assert resumed.get_last_lr() == schedule.get_last_lr()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"milestones": ["2ep", "1ep"]}, r"milestones=\['2ep', '1ep'\] must be in increasing"),
        ({"milestones": ["100sp"]}, r"milestones\[0\]='100sp' counts samples"),
        ({"milestones": ["1ep"], "gamma": -1}, r"gamma=-1 must be a number in \[0, inf\]"),
    ],
)
def test_bad_arguments(arguments, message):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=message):
        multistep(optimizer, batches_per_epoch=2, total_batches=4, **arguments)


def test_onecycle_is_torchs_over_the_whole_run():
    """Up from max_lr / 25 to max_lr over the first 30% of the batches, then down to
    max_lr / 25e4 at the last; stepped once a batch for the run's every batch."""
    rates = learning_rates(
        onecycle, 10, batches_per_epoch=5, total_batches=10, max_lr=0.4, cycle_momentum=False
    )
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0, momentum=0.9)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.4, total_steps=10, cycle_momentum=False
    )
    expected = []
    for _ in range(10):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert rates == pytest.approx(expected)
    assert rates[0] == pytest.approx(0.4 / 25)
    assert rates[2] == pytest.approx(0.4)  # the end of the rise: 30% of 10 batches
    assert rates[-1] == pytest.approx(0.4 / 25 / 1e4)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_lr": 0}, r"max_lr=0 must be a positive number"),
        ({"max_lr": 0.1, "pct_start": 1.0}, r"pct_start=1.0 must lie in \(0, 1\)"),
        ({"max_lr": 0.1, "momentum": 0.0}, r"cycle_momentum=True would turn on the optimizer's"),
    ],
)
def test_onecycle_bad_arguments(arguments, message):
    momentum = arguments.pop("momentum", 0.9)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=momentum)
    with pytest.raises(ValueError, match=message):
        onecycle(optimizer, batches_per_epoch=2, total_batches=4, **arguments)


class LearningRateLog(Callback):
    """The learning rate at each epoch's end."""

    def __init__(self):
        self.rates = []

    def epoch_end(self, state):
        self.rates.append(state.optimizers[0].param_groups[0]["lr"])


def plateau_trainer(options, lr, load_path=None, epochs=6, still=False, callbacks=()):
    """4 batches an epoch, an evaluation after each; ``still``: inputs of zeros and a
    zero bias, whose gradients are zero, so eval/loss stays ln 2 and never improves."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    if still:
        torch.nn.init.zeros_(model.bias)
    make = torch.zeros if still else torch.randn
    data = [(make(4, 3), torch.tensor([0, 1, 0, 1])) for _ in range(4)]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    log = LearningRateLog()
    trainer = Trainer(
        model, data, data[:1], max_duration=f"{epochs}ep", device="cpu",
        optimizers=optimizer, schedulers=plateau(optimizer, 4, 4 * epochs, **options),
        callbacks=[log, *callbacks], load_path=load_path,
    )  # fmt: skip
    return trainer, log


def test_plateau_reduces_after_patience_evaluations_without_improvement():
    trainer, log = plateau_trainer({"patience": 1, "factor": 0.5}, lr=1.0, still=True)
    trainer.fit()
    # No evaluation improves on the first: a reduction at every second one after it.
    assert log.rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]  # each read before its evaluation
    schedule = trainer.state.schedulers[0]
    assert trainer.state.optimizers[0].param_groups[0]["lr"] == 0.25
    assert schedule.monitor == "eval/loss"
    assert schedule.best == pytest.approx(math.log(2))
    assert schedule.num_bad_epochs == 1  # reduced at the 5th; the 6th counted one more


PLATEAU = {"patience": 1, "factor": 0.5, "mode": "max", "monitor": "eval/accuracy"}


def test_plateau_resumes_exactly_from_every_checkpoint_a_run_writes(tmp_path):
    """From an epoch's checkpoint (written at EPOCH_END, before that epoch's evaluation
    and plateau step) and from the best one (written at EVAL_END, after them), with a
    trainer.eval() of one's own before fit, the run ends as the uninterrupted one."""
    whole, whole_log = plateau_trainer(PLATEAU, lr=0.3)
    whole.fit()
    assert whole_log.rates == [0.3, 0.3, 0.3, 0.15, 0.15, 0.075]  # it reduces twice
    saver = Checkpoint(
        tmp_path, interval="1ep", keep_last=None, best_metric="eval/loss", best_mode="min"
    )
    first, _ = plateau_trainer(PLATEAU, lr=0.3, epochs=3, callbacks=[saver])
    first.fit()
    assert (tmp_path / "best-epoch3-batch12.pt").is_file()  # the loss fell
    for name in ("epoch3-batch12.pt", "best-epoch3-batch12.pt"):
        resumed, resumed_log = plateau_trainer(PLATEAU, lr=0.3, load_path=tmp_path / name)
        resumed.eval()  # a look of one's own: the loop's evaluation still runs
        resumed.fit()
        schedule = resumed.state.schedulers[0]
        assert schedule.state_dict() == whole.state.schedulers[0].state_dict(), name
        assert resumed_log.rates == whole_log.rates[3:], name
        assert torch.equal(resumed.state.model.weight, whole.state.model.weight), name


def test_only_a_reduce_on_plateau_steps_on_a_metric():
    """A per-batch schedule that happens to carry a ``monitor`` steps every batch."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = cosine(optimizer, batches_per_epoch=4, total_batches=8)
    schedule.monitor = "a label of one's own"
    data = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 4
    trainer = Trainer(
        model, data, data, max_duration="2ep", device="cpu", optimizers=optimizer,
        schedulers=schedule,
    )  # fmt: skip
    trainer.fit()
    assert schedule.last_epoch == 8


def test_plateau_is_checked_where_it_is_given():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]
    arguments = {"max_duration": "2ep", "device": "cpu", "optimizers": optimizer}
    bare = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(TypeError, match=r"schedulers\[0\] is a ReduceLROnPlateau, which steps on"):
        Trainer(model, data, data, schedulers=bare, **arguments)
    with pytest.raises(ValueError, match=r"steps on 'eval/loss' after each evaluation, but there"):
        Trainer(model, data, schedulers=plateau(optimizer, 1, 2), **arguments)
    for options, message in [
        ({"factor": 1.0}, r"factor=1.0 must lie in \(0, 1\)"),
        ({"mode": "up"}, r"mode='up' must be 'min' or 'max'"),
        ({"patience": -1}, r"patience=-1 must be an int >= 0 \(evaluations\)"),
        ({"monitor": "train/loss"}, r"monitor='train/loss' is not a metric the evaluation"),
    ]:
        with pytest.raises(ValueError, match=message):
            plateau(optimizer, 1, 2, **options)


def test_a_plateau_on_accuracy_of_a_regression_names_what_the_evaluation_computed():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 3), torch.randn(4, 1))]
    trainer = Trainer(
        model, data, data, max_duration="1ep", device="cpu", optimizers=optimizer,
        schedulers=plateau(optimizer, 1, 1, monitor="eval/accuracy", mode="max"),
        loss_fn=torch.nn.functional.mse_loss,
    )  # fmt: skip
    with warnings.catch_warnings():  # "only eval/loss is reported", said once a process
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"did not compute: it computed eval/loss\.$"):
            trainer.fit()
