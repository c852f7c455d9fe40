import copy
import io

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import OnlineLabelSmoothing
from loom.functional import OnlineLabelSmoothingLoss
from loom.trainer import Callback, Duration, State
from tests.conftest import one_batch, separable_data


class RecordSteps(Callback):
    """Keeps what the loss saw at every step: outputs, hard targets, loss; and epoch ends."""

    def __init__(self):
        self.steps, self.epoch_ends = [], []

    def after_loss(self, state):
        self.steps.append((state.outputs.detach().clone(), state.batch[1], state.loss.item()))

    def epoch_end(self, state):
        self.epoch_ends.append(len(self.steps))


def train(model, algorithm, callbacks=(), max_duration="3ep", **kwargs):
    loader = DataLoader(TensorDataset(*separable_data()), batch_size=32, shuffle=True)
    trainer = Trainer(
        model, loader, DataLoader(TensorDataset(*separable_data()), batch_size=128),
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1), max_duration=max_duration,
        algorithms=[algorithm], callbacks=list(callbacks), device="cpu", seed=0, **kwargs,
    )  # fmt: skip
    return trainer, trainer.fit()


VARIANTS = {
    "the reference's defaults": {},
    "a warm-up and label smoothing as the hard loss": {"warmup": 1, "ls_as_hard": True},
    "the authors' CIFAR code": {"first_epoch": "zero", "empty_column": "uniform"},
    "kept columns": {"empty_column": "keep"},
}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=list(VARIANTS))
def test_the_algorithm_and_the_loss_module_give_the_same_losses_and_matrix(model, variant):
    algorithm, recorder = OnlineLabelSmoothing(n_classes=4, alpha=0.5, **variant), RecordSteps()
    train(model, algorithm, callbacks=[recorder])
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=4, **variant)
    for step, (outputs, targets, loss) in enumerate(recorder.steps, start=1):
        assert targets.dtype == torch.int64, "after_loss callbacks see the hard labels again"
        assert criterion(outputs, targets).item() == pytest.approx(loss, rel=1e-6)
        if step in recorder.epoch_ends:
            criterion.next_epoch()
    torch.testing.assert_close(algorithm.matrix, criterion.matrix)
    assert not torch.equal(algorithm.matrix, OnlineLabelSmoothingLoss(0.5, 4).matrix), "it learned"


def test_a_dict_batch_is_read_at_the_runs_target_key(model):
    inputs, labels = separable_data(num_samples=16)
    algorithms = {form: OnlineLabelSmoothing(n_classes=4) for form in ("tuple", "dict")}
    tuple_gradients, _ = one_batch(model, (inputs, labels), algorithms=[algorithms["tuple"]])
    dict_gradients, _ = one_batch(
        model, {"x": inputs, "y": labels}, algorithms=[algorithms["dict"]],
        input_key="x", target_key="y",
    )  # fmt: skip
    for from_dict, from_tuple in zip(dict_gradients, tuple_gradients, strict=True):
        assert torch.equal(from_dict, from_tuple)
    assert torch.equal(algorithms["dict"].matrix, algorithms["tuple"].matrix)


def test_evaluation_never_touches_the_statistics(model):
    algorithm = OnlineLabelSmoothing(n_classes=4)
    trainer, _ = train(model, algorithm, max_duration="3ba")
    before = algorithm.state_dict()
    trainer.eval()
    after = algorithm.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert before["counts"].sum() > 0, "the partial epoch's statistics are pending"


def run_hooks(algorithm, logits, labels):
    """One batch through the algorithm's loss hooks, on a bare State."""
    state = State(
        model=torch.nn.Identity(), optimizers=[], schedulers=[],
        max_duration=Duration.parse("1ep"), train_dataloader=[], eval_dataloader=None,
        device=torch.device("cpu"), precision="fp32", batch=(logits, labels), outputs=logits,
    )  # fmt: skip
    algorithm.before_loss(state)
    algorithm.after_loss(state)


def test_state_dict_round_trip_mid_epoch_continues_exactly(model):
    torch.manual_seed(0)
    outputs = [torch.randn(16, 4) * 3 for _ in range(4)]
    targets = [torch.randint(0, 4, (16,)) for _ in range(4)]
    first = OnlineLabelSmoothing(n_classes=4)
    for logits, labels in zip(outputs[:2], targets[:2], strict=True):
        run_hooks(first, logits, labels)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = OnlineLabelSmoothing(n_classes=4)
    second.load_state_dict(torch.load(buffer, weights_only=True))  # plain tensors only
    for algorithm in (first, second):
        for logits, labels in zip(outputs[2:], targets[2:], strict=True):
            run_hooks(algorithm, logits, labels)
        algorithm.epoch_end(state=None)
    assert torch.equal(first.matrix, second.matrix)
    assert set(first.state_dict()) == {"matrix", "accumulator", "counts", "epoch"}
    assert first.state_dict()["epoch"].item() == 1


def test_bf16_autocast_and_gradient_accumulation(model):
    algorithm = OnlineLabelSmoothing(n_classes=4)
    _, metrics = train(copy.deepcopy(model), algorithm, precision="bf16", grad_accum=2)
    assert algorithm.state_dict()["accumulator"].dtype == torch.float32
    assert metrics["eval/accuracy"] > 0.8


def test_a_mismatched_class_count_names_the_algorithm_and_event(model):
    algorithm = OnlineLabelSmoothing(n_classes=5)
    with pytest.raises(
        ValueError, match=r"logits of shape \(32, 4\) do not have n_classes=5"
    ) as raised:
        train(model, algorithm, max_duration="1ba")
    assert raised.value.__notes__ == [
        "raised by algorithm OnlineLabelSmoothing at event 'before_loss'"
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_classes": 1}, ValueError, r"n_classes=1 must be an int >= 2"),
        ({"n_classes": 3, "alpha": 2.0}, ValueError, r"alpha=2.0 must lie in \[0, 1\]"),
        ({"n_classes": 3, "target_key": 1.5}, TypeError, r"target_key=1.5 is not a batch key"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        OnlineLabelSmoothing(**kwargs)
