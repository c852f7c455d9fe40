import random

import pytest
import torch
import torch.nn.functional as F

from loom import Trainer
from loom.algorithms import LabelSmoothing, MixUp, OnlineLabelSmoothing
from loom.functional import soft_cross_entropy
from loom.trainer import Callback, CompositionError, get_batch_item
from tests.conftest import one_batch, separable_data

INPUTS = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


class Spy(Callback):
    """Records what the model got and what the loss and batch_end saw."""

    def __init__(self):
        self.forward_inputs, self.loss_targets, self.end_targets, self.losses = [], [], [], []

    def after_forward(self, state):
        self.after_forward_inputs = get_batch_item(state.batch, 0)

    def after_loss(self, state):
        self.losses.append(state.loss.detach())

    def batch_end(self, state):
        self.end_targets.append(get_batch_item(state.batch, 1))


class MixedInputsModel(torch.nn.Module):
    """A linear model that remembers its inputs."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(5, 4)
        self.seen = []

    def forward(self, inputs):
        self.seen.append(inputs.clone())
        return self.linear(inputs)


def run(algorithms):
    torch.manual_seed(0)
    model = MixedInputsModel()
    spy = Spy()
    trainer = Trainer(
        model,
        [(INPUTS, LABELS)],
        max_duration="1ba",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        algorithms=algorithms,
        callbacks=[spy],
        seed=3,
    )
    trainer.fit()
    return model, spy, trainer


def expected_mixing(seed=3, alpha=0.2):
    """The weight and pairing MixUp draws after Trainer(seed=seed) seeds everything."""
    random.seed(seed)
    torch.manual_seed(seed)
    return random.betavariate(alpha, alpha), torch.randperm(8)


def test_mixup_trains_on_the_mixed_batch_and_restores_it():
    model, spy, _ = run([MixUp(alpha=0.2)])
    weight, permutation = expected_mixing()
    torch.testing.assert_close(model.seen[0], weight * INPUTS + (1 - weight) * INPUTS[permutation])
    assert spy.after_forward_inputs is INPUTS  # restored after the forward
    one_hot = F.one_hot(LABELS, 4).float()
    targets = weight * one_hot + (1 - weight) * one_hot[permutation]
    logits = model.linear(model.seen[0]).detach()
    torch.testing.assert_close(spy.losses[0], soft_cross_entropy(logits, targets))
    assert spy.end_targets[0] is LABELS  # metrics see the true labels


@pytest.mark.parametrize("order", ["smoothing first", "mixup first"])
def test_with_label_smoothing_in_either_order_the_mixture_is_smoothed_once(order):
    algorithms = [LabelSmoothing(0.1), MixUp(0.2)]
    if order == "mixup first":
        algorithms.reverse()
    model, spy, _ = run(algorithms)
    weight, permutation = expected_mixing()
    one_hot = F.one_hot(LABELS, 4).float()
    mixed = weight * one_hot + (1 - weight) * one_hot[permutation]
    targets = 0.9 * mixed + 0.1 / 4
    logits = model.linear(model.seen[0]).detach()
    torch.testing.assert_close(spy.losses[0], soft_cross_entropy(logits, targets))
    assert spy.end_targets[0] is LABELS


def test_with_online_label_smoothing_listed_first():
    _, spy, trainer = run([OnlineLabelSmoothing(n_classes=4), MixUp(0.2)])
    assert spy.end_targets[0] is LABELS
    assert trainer.state.timestamp.batch == 1
    # Listed after MixUp it would see dense targets: refused before anything trains.
    with pytest.raises(
        CompositionError,
        match=r"OnlineLabelSmoothing reads the targets at before_loss as the batch holds them, "
        r"but MixUp has changed them by then .*List OnlineLabelSmoothing before MixUp\.$",
    ):
        run([MixUp(0.2), OnlineLabelSmoothing(n_classes=4)])


def test_a_dict_batch_is_mixed_at_the_runs_keys():
    inputs, labels = separable_data(num_samples=16)
    runs = {}
    for form, batch, keys in (
        ("tuple", (inputs, labels), {}),
        ("dict", {"x": inputs, "y": labels}, {"input_key": "x", "target_key": "y"}),
    ):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4)
        runs[form], _ = one_batch(model, batch, algorithms=[MixUp(alpha=1.0)], seed=0, **keys)
    for from_dict, from_tuple in zip(runs["dict"], runs["tuple"], strict=True):
        assert torch.equal(from_dict, from_tuple)


def test_evaluation_is_never_mixed():
    torch.manual_seed(0)
    model = MixedInputsModel()
    trainer = Trainer(
        model,
        [(INPUTS, LABELS)],
        [(INPUTS, LABELS)],
        max_duration="1ba",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        algorithms=[MixUp(1.0)],
    )
    trainer.fit()
    assert torch.equal(model.seen[-1], INPUTS)  # the final evaluation's forward


@pytest.mark.parametrize("alpha", [0, -1, float("inf"), True, "0.2"])
def test_bad_alpha_is_named(alpha):
    with pytest.raises(
        (TypeError, ValueError), match=r"MixUp: alpha=.* must be a positive, finite"
    ):
        MixUp(alpha=alpha)
