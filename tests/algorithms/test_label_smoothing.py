from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import LabelSmoothing
from loom.functional import smooth_labels
from loom.trainer import Callback, get_batch_item
from tests.conftest import LossRecorder, one_batch, plain_sgd_run, separable_data


@dataclass
class ObjectBatch:
    inputs: torch.Tensor
    labels: torch.Tensor


def _pair_get(batch):
    return batch["y"]["class"]


def _pair_set(batch, value):
    return {**batch, "y": {"class": value}}


# (how to build a batch from inputs and labels, input_key, target_key)
BATCH_FORMS = {
    "tuple": (lambda x, y: (x, y), 0, 1),
    "list": (lambda x, y: [x, y], 0, 1),
    "dict": (lambda x, y: {"image": x, "label": y}, "image", "label"),
    "object": (lambda x, y: ObjectBatch(x, y), "inputs", "labels"),
    "getter-setter": (lambda x, y: {"x": x, "y": {"class": y}}, "x", (_pair_get, _pair_set)),
}


class SeenTargets(Callback):
    """Records the targets as every callback sees them at loss time and at batch end."""

    def __init__(self, target_key):
        self.target_key, self.at_after_loss, self.at_batch_end = target_key, [], []

    def after_loss(self, state):
        self.at_after_loss.append(get_batch_item(state.batch, self.target_key))

    def batch_end(self, state):
        self.at_batch_end.append(get_batch_item(state.batch, self.target_key))


@pytest.mark.parametrize("form", sorted(BATCH_FORMS))
def test_every_later_plugin_sees_the_original_targets(form, model):
    build, input_key, target_key = BATCH_FORMS[form]
    inputs, labels = separable_data(num_samples=64)
    batches = [build(inputs[i : i + 16], labels[i : i + 16]) for i in range(0, 64, 16)]
    seen = SeenTargets(target_key)
    trainer = Trainer(
        model, batches, optimizers=torch.optim.SGD(model.parameters(), lr=0.1), max_duration="1ep",
        algorithms=[LabelSmoothing(0.1, target_key=target_key)], callbacks=[seen],
        input_key=input_key, target_key=target_key, device="cpu",
    )  # fmt: skip
    trainer.fit()
    for i, (after_loss, batch_end) in enumerate(
        zip(seen.at_after_loss, seen.at_batch_end, strict=True)
    ):
        assert torch.equal(after_loss, labels[i * 16 : (i + 1) * 16])
        assert torch.equal(batch_end, labels[i * 16 : (i + 1) * 16])
        assert batch_end.dtype == torch.int64


@pytest.mark.parametrize("form", sorted(BATCH_FORMS))
def test_the_runs_target_key_is_the_algorithms_when_it_has_none_of_its_own(form, model):
    build, input_key, target_key = BATCH_FORMS[form]
    inputs, labels = separable_data(num_samples=16)
    fused = lambda outputs, targets: F.cross_entropy(outputs, targets, label_smoothing=0.1)  # noqa: E731
    expected, _ = one_batch(model, (inputs, labels), loss_fn=fused)
    gradients, _ = one_batch(
        model, build(inputs, labels), algorithms=[LabelSmoothing(0.1)],
        input_key=input_key, target_key=target_key,
    )  # fmt: skip
    for ours, reference in zip(gradients, expected, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


def test_the_loss_sees_the_smoothed_targets(model):
    inputs, labels = separable_data(num_samples=16)
    seen = {}

    def loss_fn(outputs, targets):
        seen.setdefault("targets", targets)
        return F.cross_entropy(outputs, targets)

    trainer = Trainer(
        model, [(inputs, labels)], optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        max_duration="1ba", algorithms=[LabelSmoothing(0.2)], loss_fn=loss_fn, device="cpu",
    )  # fmt: skip
    trainer.fit()
    torch.testing.assert_close(seen["targets"], smooth_labels(torch.zeros(16, 4), labels, 0.2))


def trainer_and_plain_fused_loop(model, loader, epochs):
    """Trains ``model`` with LabelSmoothing(0.1) and a copy in a plain loop with the fused
    loss; returns the plain copy and both runs' losses."""
    fused = lambda outputs, targets: F.cross_entropy(outputs, targets, label_smoothing=0.1)  # noqa: E731
    plain_model, plain_losses = plain_sgd_run(model, loader, epochs=epochs, loss_fn=fused)
    recorder = LossRecorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    Trainer(
        model, loader, optimizers=optimizer, max_duration=f"{epochs}ep", device="cpu",
        algorithms=[LabelSmoothing(0.1)], callbacks=[recorder],
    ).fit()  # fmt: skip
    return plain_model, recorder.losses, plain_losses


def test_a_trainer_run_follows_a_plain_loop_with_fused_label_smoothing(model):
    loader = DataLoader(TensorDataset(*separable_data()), batch_size=32)
    plain_model, losses, plain_losses = trainer_and_plain_fused_loop(model, loader, epochs=2)
    assert losses == pytest.approx(plain_losses, rel=1e-6)
    for ours, plain in zip(model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)


def test_the_default_loss_takes_the_fused_kernel_so_a_run_equals_the_plain_loop_bitwise():
    """Large logits: smooth_labels' targets reach soft_cross_entropy unchanged, and it
    computes torch's fused label-smoothed loss from the class indices."""
    generator = torch.Generator().manual_seed(0)
    classes = 2048  # batches of 32 x 2048 logits, above ONE_PASS_FROM
    inputs = torch.randn(96, 8, generator=generator)
    labels = torch.randint(0, classes, (96,), generator=generator)
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=32)
    model = torch.nn.Linear(8, classes)
    plain_model, losses, plain_losses = trainer_and_plain_fused_loop(model, loader, epochs=1)
    assert losses == plain_losses
    for ours, plain in zip(model.parameters(), plain_model.parameters(), strict=True):
        assert torch.equal(ours, plain)


def test_bf16_autocast_and_gradient_accumulation(model):
    batch = separable_data(num_samples=30)
    gradients = {}
    for grad_accum in (1, 3):
        gradients[grad_accum], metrics = one_batch(
            model, batch, precision="bf16", grad_accum=grad_accum, algorithms=[LabelSmoothing(0.1)]
        )
        assert metrics["train/loss"] > 0
    for whole, accumulated in zip(gradients[1], gradients[3], strict=True):
        torch.testing.assert_close(accumulated, whole, rtol=2e-2, atol=1e-3)  # bf16 forward


def test_an_error_in_the_targets_names_the_algorithm_and_event(model):
    batches = [(torch.randn(4, 8), torch.tensor([0, 1, 2, 7]))]
    trainer = Trainer(
        model, batches, optimizers=torch.optim.SGD(model.parameters(), lr=0.1), max_duration="1ba",
        algorithms=[LabelSmoothing(0.1)], device="cpu",
    )  # fmt: skip
    with pytest.raises(
        ValueError, match=r"class index 7 at position \(3,\); expected 0 <= index < 4"
    ) as raised:
        trainer.fit()
    assert raised.value.__notes__ == ["raised by algorithm LabelSmoothing at event 'before_loss'"]


def test_a_missing_target_key_names_the_key(model):
    batches = [{"image": torch.randn(4, 8), "label": torch.tensor([0, 1, 2, 3])}]
    trainer = Trainer(
        model, batches, optimizers=torch.optim.SGD(model.parameters(), lr=0.1), max_duration="1ba",
        algorithms=[LabelSmoothing(0.1, target_key="labels")],
        input_key="image", target_key="label", device="cpu",
    )  # fmt: skip
    with pytest.raises(
        KeyError, match=r"'labels' is not in the dict batch; its keys are \['image', 'label'\]"
    ):
        trainer.fit()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"smoothing": 1.5}, ValueError, r"smoothing=1.5 must lie in \[0, 1\]"),
        ({"smoothing": float("nan")}, ValueError, r"smoothing=nan must lie in \[0, 1\]"),
        ({"smoothing": "0.1"}, TypeError, r"smoothing='0.1' must be a number"),
        ({"target_key": 1.0}, TypeError, r"target_key=1.0 is not a batch key"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        LabelSmoothing(**kwargs)
