"""SAM: its step equals a hand-written one, and the second pass sees the batch as the first."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import loom.functional as lf
from loom import Trainer
from loom.algorithms import SAM, LabelSmoothing, MixUp, OnlineLabelSmoothing
from loom.trainer import Callback, CompositionError

# The functional form


def test_the_perturbation_is_rho_along_the_gradient_over_all_weights():
    weights = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    steps = lf.sam_perturbation(weights, grads, rho=0.5)
    assert torch.allclose(steps[0], torch.tensor([0.3, 0.0]))  # 0.5 * 3 / 5
    assert torch.allclose(steps[1], torch.tensor([[0.4]]))


def test_adaptive_scales_the_neighbourhood_by_the_weights():
    weights, grads = [torch.tensor([2.0, 1.0])], [torch.tensor([1.0, 1.0])]
    (step,) = lf.sam_perturbation(weights, grads, rho=1.0, adaptive=True)
    norm = torch.tensor([2.0, 1.0]).norm()  # || |w| * g ||
    assert torch.allclose(step, torch.tensor([4.0, 1.0]) / norm)  # w**2 * g / norm


def test_gradients_that_are_not_finite_give_no_step():
    (step,) = lf.sam_perturbation([torch.ones(3)], [torch.tensor([1.0, float("inf"), 2.0])])
    assert torch.equal(step, torch.zeros(3))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"rho": 0.0}, ValueError, "rho=0.0 must be a positive, finite number"),
        ({"rho": "big"}, TypeError, "rho='big' must be a positive"),
    ],
)
def test_a_bad_rho_is_refused(arguments, error, message):
    with pytest.raises(error, match=message):
        lf.sam_perturbation([torch.ones(1)], [torch.ones(1)], **arguments)


def test_one_gradient_per_weight():
    with pytest.raises(ValueError, match="2 weights, 1 gradients"):
        lf.sam_perturbation([torch.ones(1), torch.ones(1)], [torch.ones(1)])


# The algorithm's step, against a hand-written SAM on a two-parameter problem


class TwoWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([0.7, -0.4], dtype=torch.float64))

    def forward(self, inputs):
        return torch.tanh(inputs @ self.weight)


def squared_error(outputs, targets):
    return ((outputs - targets) ** 2).mean()


def two_weight_data():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 2, generator=generator, dtype=torch.float64)
    return inputs, torch.sin(inputs.sum(dim=1))


def hand_sam(weight, inputs, targets, rho, adaptive, lr, steps):
    """SAM written out: gradient at w, ascend to w + e, gradient there, descend from w."""
    weight = weight.detach().clone()
    for _ in range(steps):
        w = weight.clone().requires_grad_()
        (gradient,) = torch.autograd.grad(squared_error(torch.tanh(inputs @ w), targets), w)
        scale = weight.abs() if adaptive else torch.ones_like(weight)
        ascent = rho * scale**2 * gradient / (scale * gradient).norm()
        w = (weight + ascent).requires_grad_()
        (sharp,) = torch.autograd.grad(squared_error(torch.tanh(inputs @ w), targets), w)
        weight = weight - lr * sharp
    return weight


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "adaptive"])
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_the_step_equals_a_hand_written_sam_step(adaptive, grad_accum):
    inputs, targets = two_weight_data()
    model = TwoWeights()
    start = model.weight.detach().clone()
    trainer = Trainer(
        model,
        [(inputs, targets)] * 3,
        max_duration="3ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
        algorithms=[SAM(rho=0.3, adaptive=adaptive)],
        loss_fn=squared_error,
        grad_accum=grad_accum,
        device="cpu",
    )
    trainer.fit()
    expected = hand_sam(start, inputs, targets, 0.3, adaptive, lr=0.5, steps=3)
    assert torch.allclose(model.weight.detach(), expected, rtol=0, atol=1e-12)
    plain = hand_sam(start, inputs, targets, 1e-9, adaptive, lr=0.5, steps=3)
    assert not torch.allclose(expected, plain, atol=1e-6)  # SAM's step is not plain SGD's


def test_the_training_loss_is_the_first_pass_s_and_buffers_count_the_batch_once():
    torch.manual_seed(0)
    inputs, labels = torch.randn(32, 4), torch.randint(0, 3, (32,))
    losses = {}
    models = {}
    for name, algorithms in (("plain", []), ("sam", [SAM(rho=0.5)])):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
        trainer = Trainer(
            model,
            [(inputs, labels)],
            max_duration="1ba",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            algorithms=algorithms,
            device="cpu",
        )
        losses[name] = trainer.fit()["train/loss"]
        models[name] = model
    assert losses["sam"] == losses["plain"]  # the loss at w, before any step
    plain_bn, sam_bn = models["plain"][1], models["sam"][1]
    assert torch.equal(sam_bn.running_mean, plain_bn.running_mean)
    assert torch.equal(sam_bn.num_batches_tracked, plain_bn.num_batches_tracked)
    assert not torch.equal(models["sam"][0].weight, models["plain"][0].weight)


# The second pass: the same targets, the same mixing, statistics counted once


class PassRecorder(Callback):
    """What the loss saw, per pass: callbacks run after the algorithms' changes."""

    def __init__(self):
        self.inputs, self.targets = {False: [], True: []}, {False: [], True: []}

    def before_forward(self, state):
        self.inputs[state.recomputing].append(state.get_inputs().clone())

    def before_loss(self, state):
        self.targets[state.recomputing].append(state.get_targets().clone())


@pytest.mark.parametrize(
    "algorithms",
    [
        lambda: [LabelSmoothing(0.2)],
        lambda: [MixUp(alpha=1.0, prob=0.5)],
        lambda: [OnlineLabelSmoothing(n_classes=3), MixUp(alpha=0.4)],
    ],
    ids=["label_smoothing", "mixup", "ols_then_mixup"],
)
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_the_second_pass_sees_what_the_first_saw(algorithms, grad_accum):
    torch.manual_seed(0)
    inputs, labels = torch.randn(48, 4), torch.randint(0, 3, (48,))
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    recorder = PassRecorder()
    Trainer(
        model,
        DataLoader(TensorDataset(inputs, labels), batch_size=16, shuffle=True),
        max_duration="2ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        algorithms=[*algorithms(), SAM(rho=0.1)],
        callbacks=[recorder],
        grad_accum=grad_accum,
        device="cpu",
        seed=0,
    ).fit()
    assert len(recorder.targets[True]) == len(recorder.targets[False]) == 6 * grad_accum
    for first, second in zip(recorder.inputs[False], recorder.inputs[True], strict=True):
        assert torch.equal(first, second)
    for first, second in zip(recorder.targets[False], recorder.targets[True], strict=True):
        assert torch.equal(first, second)
    assert any(t.dim() == 2 for t in recorder.targets[False])  # smoothed or mixed: dense


def test_online_label_smoothing_counts_each_sample_once():
    torch.manual_seed(0)
    inputs, labels = torch.randn(40, 4), torch.randint(0, 3, (40,))
    model = nn.Sequential(nn.Linear(4, 3))
    smoothing = OnlineLabelSmoothing(n_classes=3)
    counted = []
    accumulate = smoothing._criterion.accumulate
    smoothing._criterion.accumulate = lambda logits, target: (
        counted.append(len(logits)),
        accumulate(logits, target),
    )
    Trainer(
        model,
        DataLoader(TensorDataset(inputs, labels), batch_size=16),
        max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        algorithms=[smoothing, SAM()],
        device="cpu",
    ).fit()
    assert counted == [16, 16, 8]


# Its place in the loop


def test_recomputing_is_only_allowed_before_the_optimizer_step():
    class TooEarly(Callback):
        def after_backward(self, state):
            state.recompute_gradients()

    model = nn.Linear(2, 2)
    trainer = Trainer(
        model,
        [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))],
        max_duration="1ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[TooEarly()],
        device="cpu",
    )
    with pytest.raises(RuntimeError, match="call it at before_optimizer_step") as raised:
        trainer.fit()
    assert "raised by callback TooEarly at event 'after_backward'" in raised.value.__notes__


def test_two_sams_are_refused():
    model = nn.Linear(2, 2)
    with pytest.raises(CompositionError, match="SAM #1 and SAM #2 both replace the optimizer_step"):
        Trainer(
            model,
            [],
            max_duration="1ba",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            algorithms=[SAM(), SAM(rho=0.1)],
        )


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"rho": -1}, ValueError, "SAM: rho=-1 must be a positive, finite number"),
        ({"adaptive": "yes"}, TypeError, "SAM: adaptive='yes' must be True or False"),
    ],
)
def test_bad_arguments_are_named(arguments, error, message):
    with pytest.raises(error, match=message):
        SAM(**arguments)


def test_a_batch_run_again_twice_is_mixed_as_the_first_time_each_time():
    class TwoMore(Callback):
        def before_optimizer_step(self, state):
            state.recompute_gradients()
            state.recompute_gradients()

    torch.manual_seed(0)
    inputs, labels = torch.randn(32, 4), torch.randint(0, 3, (32,))
    model = nn.Sequential(nn.Linear(4, 3))
    recorder = PassRecorder()
    Trainer(
        model,
        DataLoader(TensorDataset(inputs, labels), batch_size=16),
        max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        algorithms=[MixUp(alpha=1.0)],
        callbacks=[TwoMore(), recorder],
        grad_accum=2,
        device="cpu",
    ).fit()
    first, again = recorder.inputs[False], recorder.inputs[True]
    assert len(again) == 2 * len(first) == 8
    for batch in range(2):
        mine = first[2 * batch : 2 * batch + 2]
        for second in (again[4 * batch : 4 * batch + 2], again[4 * batch + 2 : 4 * batch + 4]):
            assert all(torch.equal(a, b) for a, b in zip(mine, second, strict=True))
