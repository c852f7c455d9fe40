import math

import pytest
import torch

from loom.optim import LearningRateFactor, constant, cosine, multistep, onecycle, step


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
