"""The Trainer: the loop contract (which events fire, in what order, with what the clock
says), and end-to-end runs on tiny data (it learns, matches a plain loop, checks its
arguments, names where an error happened)."""

import copy
import dataclasses
import functools
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from loom import Event, Trainer
from loom.trainer import Algorithm, Callback, changes
from tests.conftest import LossRecorder, one_batch, plain_sgd_run, separable_data


def fit(model, loaders, optimizer, **kwargs):
    train_loader, eval_loader = loaders
    kwargs = {"max_duration": "1ep", "device": "cpu", **kwargs}
    trainer = Trainer(model, train_loader, eval_loader, optimizers=optimizer, **kwargs)
    return trainer, trainer.fit()


def test_a_model_learns(model, loaders, optimizer):
    trainer = Trainer(
        model, loaders[0], loaders[1], optimizers=optimizer, max_duration="1ba", device="cpu"
    )
    before = trainer.fit()["eval/accuracy"]
    trainer.state.max_duration = trainer.state.max_duration.parse("8ep")
    after = trainer.fit()
    assert after["eval/accuracy"] > max(0.9, before + 0.2)
    assert after["train/loss"] < 0.5


def test_the_trainer_follows_a_plain_loop_exactly(model, loaders):
    plain_model, losses = plain_sgd_run(model, loaders[0], epochs=2, loss_fn=F.cross_entropy)
    recorder = LossRecorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(model, loaders, optimizer, max_duration="2ep", callbacks=[recorder])
    assert recorder.losses == losses
    for trained, plain in zip(model.parameters(), plain_model.parameters(), strict=True):
        assert torch.equal(trained, plain)


def test_no_spent_graph_outlives_its_step(model, loaders, optimizer):
    # The epoch's losses are kept for train/loss; kept with their graphs, every later
    # allocation of the run would pay for the memory they pin.
    trainer = Trainer(model, loaders[0], optimizers=optimizer, max_duration="1ep", device="cpu")
    kept, keep = [], trainer.state.train_losses.update
    trainer.state.train_losses.update = lambda loss, n: (kept.append(loss), keep(loss, n))
    trainer.fit()
    assert len(kept) == len(loaders[0])
    assert all(loss.grad_fn is None and not loss.requires_grad for loss in kept)


def test_gradient_accumulation_equals_the_large_batch(model):
    batch = separable_data(num_samples=30)
    gradients = {  # 30 samples in 4 microbatches: 8, 8, 7, 7
        grad_accum: one_batch(model, batch, grad_accum=grad_accum)[0] for grad_accum in (1, 4)
    }
    for whole, accumulated in zip(gradients[1], gradients[4], strict=True):
        torch.testing.assert_close(accumulated, whole, rtol=1e-5, atol=1e-7)


def test_gradient_accumulation_reports_the_whole_batch_loss(model):
    batch = separable_data(num_samples=30)
    losses = {
        grad_accum: one_batch(model, batch, grad_accum=grad_accum)[1]["train/loss"]
        for grad_accum in (1, 3)
    }
    assert losses[3] == pytest.approx(losses[1], rel=1e-5)


def test_bf16_autocast_on_cpu(model, loaders, optimizer):
    class RecordDtype(Algorithm):
        def after_forward(self, state):
            self.dtype = state.outputs.dtype

    recorder = RecordDtype()
    _, metrics = fit(
        model, loaders, optimizer, precision="bf16", max_duration="4ep", algorithms=[recorder]
    )
    assert recorder.dtype == torch.bfloat16
    assert model[0].weight.dtype == torch.float32, "autocast keeps the weights in float32"
    assert metrics["eval/accuracy"] > 0.8


def test_fp16_needs_cuda(model, optimizer, loaders):
    with pytest.raises(
        ValueError, match=r"precision='fp16' needs a CUDA device.*use precision='bf16'"
    ):
        fit(model, loaders, optimizer, precision="fp16")


def test_schedulers_step_after_every_batch_and_optimizers_may_be_several(loaders):
    torch.manual_seed(0)
    body, head = nn.Linear(8, 16), nn.Linear(16, 4)
    model = nn.Sequential(body, nn.ReLU(), head)
    optimizers = [
        torch.optim.SGD(body.parameters(), lr=1.0),
        torch.optim.SGD(head.parameters(), lr=1.0),
    ]
    scheduler = torch.optim.lr_scheduler.StepLR(optimizers[0], step_size=1, gamma=0.5)
    head_before = head.weight.detach().clone()
    fit(model, loaders, optimizers, schedulers=scheduler, max_duration="3ba")
    assert optimizers[0].param_groups[0]["lr"] == 0.125
    assert not torch.equal(head.weight, head_before), "the second optimizer stepped too"


def test_gradient_clipping_bounds_the_update(model, loaders):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    fit(model, loaders, optimizer, max_duration="1ba", grad_clip_norm=1e-3)
    step = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)]
    )
    assert step.norm() <= 1e-3 * (1 + 1e-4)


def test_dict_batches_with_str_keys(model, optimizer):
    inputs, targets = separable_data()
    batches = [
        {"image": inputs[i : i + 32], "label": targets[i : i + 32]} for i in range(0, 256, 32)
    ]
    trainer = Trainer(
        model,
        batches,
        batches,
        optimizers=optimizer,
        max_duration="5ep",
        input_key="image",
        target_key="label",
        device="cpu",
    )
    assert trainer.fit()["eval/accuracy"] > 0.9


def test_seed_makes_shuffled_runs_repeat(data):
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Linear(8, 4)
        loader = DataLoader(TensorDataset(*data), batch_size=32, shuffle=True)
        Trainer(
            model,
            loader,
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            max_duration="2ep",
            seed=7,
            device="cpu",
        ).fit()
        weights.append(model.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_errors_in_the_model_and_loss_keep_their_type_and_say_where(model, optimizer, loaders):
    targets_out_of_range = [(torch.randn(4, 8), torch.tensor([0, 1, 2, 9]))]
    trainer = Trainer(
        model, targets_out_of_range, optimizers=optimizer, max_duration="1ba", device="cpu"
    )
    with pytest.raises(
        ValueError, match=r"^target holds class index 9 at position \(3,\); expected 0 <= index < 4"
    ) as raised:
        trainer.fit()
    assert raised.value.__suppress_context__, "torch's own IndexError is not shown under it"
    assert raised.value.__notes__ == [
        "raised by loss_fn(outputs, targets) in training at epoch 1, batch 1 of the epoch "
        "(batch 1 of the run), "
        "outputs float32 (4, 4) on cpu, targets int64 (4,) on cpu"
    ]
    wrong_width = [(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))]
    trainer = Trainer(model, wrong_width, optimizers=optimizer, max_duration="1ba", device="cpu")
    with pytest.raises(RuntimeError) as raised:
        trainer.fit()
    assert raised.value.__notes__ == [
        "raised by the model's forward in training at epoch 1, batch 1 of the epoch "
        "(batch 1 of the run), "
        "inputs float32 (4, 5) on cpu"
    ]


REDUCE = "reduce it to one number over the batch, e.g. reduction='mean' or .mean()."


@pytest.mark.parametrize(
    ("loss_fn", "returned", "fix"),
    [
        (
            lambda outputs, targets: F.cross_entropy(outputs, targets, reduction="none"),
            "loss_fn <lambda> returned float32 (4,) on cpu",
            REDUCE,
        ),
        (
            nn.CrossEntropyLoss(reduction="none"),
            "loss_fn CrossEntropyLoss(reduction='none') returned float32 (4,) on cpu",
            REDUCE,
        ),
        (
            functools.partial(F.cross_entropy, reduction="none"),
            "loss_fn cross_entropy (partial, reduction='none') returned float32 (4,) on cpu",
            REDUCE,
        ),
        (
            lambda outputs, targets: F.cross_entropy(outputs, targets).item(),
            "loss_fn <lambda> returned float",
            "return the tensor itself, not .item() or a float.",
        ),
    ],
    ids=["per-sample", "a-module", "a-partial", "a-python-float"],
)
def test_a_loss_that_is_not_one_number_is_named_with_its_function_before_the_backward(
    model, optimizer, loss_fn, returned, fix
):
    batch = [(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))]
    before = [parameter.detach().clone() for parameter in model.parameters()]
    trainer = Trainer(
        model, batch, optimizers=optimizer, max_duration="1ba", device="cpu", loss_fn=loss_fn
    )
    message = (
        f"{returned} in training at epoch 1, batch 1 of the epoch (batch 1 of the run); the "
        f"loss to backpropagate must be a scalar tensor (0-d): {fix}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        trainer.fit()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_loss_per_sample_in_evaluation_is_named_at_its_first_batch(model, optimizer):
    batch = [(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))]
    trainer = Trainer(
        model, batch, batch, optimizers=optimizer, max_duration="1ba", device="cpu",
        loss_fn=nn.CrossEntropyLoss(reduction="none"),
    )  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"^loss_fn CrossEntropyLoss\(reduction='none'\) returned float32 \(4,\) on cpu in "
        r"evaluation, at batch 1 of the evaluation \(after 0 training batches\); the "
        r"evaluation loss must be a scalar tensor \(0-d\): reduce it to one number over the "
        r"batch, e\.g\. reduction='mean' or \.mean\(\)\.$",
    ):
        trainer.eval()


def test_a_plugin_that_leaves_a_loss_per_sample_is_named_not_the_loss_fn(model, optimizer):
    class LossPerSample(Algorithm):
        effects = (changes("loss", at="after_loss", how="replaces"),)

        def after_loss(self, state):
            state.loss = F.cross_entropy(state.outputs, state.get_targets(), reduction="none")

    batch = [(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))]
    trainer = Trainer(
        model, batch, optimizers=optimizer, max_duration="1ba", device="cpu",
        algorithms=[LossPerSample()],
    )  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"^state\.loss, as the plugins left it at before_backward \(the algorithms that "
        r"declare changing it: LossPerSample\), is float32 \(4,\) on cpu in training at .*; "
        r"the loss to backpropagate must be a scalar tensor \(0-d\): a plugin that replaces "
        r"state\.loss must reduce it",
    ):
        trainer.fit()


def test_an_error_in_evaluation_names_the_evaluation_batch(model, optimizer):
    class FailsOnThirdEvalBatch(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, inputs):
            if not self.training:
                self.calls += 1
                if self.calls == 3:
                    raise RuntimeError("broken")
            return self.inner(inputs)

    batches = [(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))] * 4
    trainer = Trainer(
        FailsOnThirdEvalBatch(model), batches, batches, optimizers=optimizer,
        max_duration="2ba", device="cpu",
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="broken") as raised:
        trainer.fit()
    assert raised.value.__notes__ == [
        "raised by the model's forward in evaluation, at batch 3 of the evaluation (after "
        "2 training batches), inputs float32 (4, 8) on cpu"
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"model": "net"}, TypeError, r"model must be a torch.nn.Module, got str"),
        (
            {"train_dataloader": torch.zeros(3)},
            TypeError,
            r"train_dataloader must be an iterable of batches",
        ),
        ({"eval_dataloader": 3}, TypeError, r"eval_dataloader must be an iterable of batches"),
        ({"max_duration": "10"}, ValueError, r"max_duration='10' is not a duration"),
        (
            {"optimizers": []},
            TypeError,
            r"optimizers must be a torch optimizer or a non-empty list",
        ),
        ({"optimizers": ["sgd"]}, TypeError, r"optimizers\[0\] is a str, not a torch optimizer"),
        ({"schedulers": [3]}, TypeError, r"schedulers\[0\] is a int, which has no step\(\)"),
        ({"loss_fn": "ce"}, TypeError, r"loss_fn must be callable"),
        ({"input_key": 1.5}, TypeError, r"input_key=1.5 is not a batch key"),
        ({"target_key": None}, TypeError, r"target_key=None is not a batch key"),
        ({"device": "gpu"}, ValueError, r"device='gpu' is not a device"),
        ({"precision": "fp8"}, ValueError, r"precision='fp8' is not one of fp32, bf16, fp16"),
        ({"grad_accum": 0}, ValueError, r"grad_accum=0 must be an int >= 1"),
        ({"grad_clip_norm": -1.0}, ValueError, r"grad_clip_norm=-1.0 must be a positive number"),
        ({"eval_interval": "100sp"}, ValueError, r"eval_interval='100sp' counts samples"),
        ({"seed": -1}, ValueError, r"seed=-1 must be a non-negative int"),
        (
            {"algorithms": [3]},
            TypeError,
            r"algorithms\[0\] must be an instance of loom.Algorithm, got 3",
        ),
    ],
)
def test_bad_arguments_are_named(model, loaders, optimizer, kwargs, error, message):
    arguments = {
        "model": model,
        "train_dataloader": loaders[0],
        "max_duration": "1ep",
        "optimizers": optimizer,
        "device": "cpu",
        **kwargs,
    }
    with pytest.raises(error, match=message):
        Trainer(**arguments)


def test_an_optimizer_of_another_model_is_refused(model, loaders):
    other = nn.Linear(8, 4)
    with pytest.raises(
        ValueError, match=r"optimizers\[0\] \(SGD\) holds none of the model's parameters"
    ):
        Trainer(
            model,
            loaders[0],
            optimizers=torch.optim.SGD(other.parameters(), lr=0.1),
            max_duration="1ep",
        )


def test_eval_without_a_dataloader_says_what_to_pass(model, loaders, optimizer):
    trainer = Trainer(model, loaders[0], optimizers=optimizer, max_duration="1ep", device="cpu")
    with pytest.raises(ValueError, match=r"eval\(\) needs a dataloader"):
        trainer.eval()
    assert trainer.eval(loaders[1])["eval/accuracy"] >= 0


class ErrorOnHostSync(Callback):
    """Makes any host synchronisation between batch_start and batch_end raise."""

    def batch_start(self, state):
        torch.cuda.set_sync_debug_mode("error")

    def batch_end(self, state):
        torch.cuda.set_sync_debug_mode("default")

    def fit_end(self, state):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_step_has_no_host_sync(model, loaders, precision):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(
        model, loaders[0], loaders[1], optimizers=optimizer, max_duration="2ep",
        device="cuda", precision=precision, grad_clip_norm=1.0, callbacks=[ErrorOnHostSync()],
    )  # fmt: skip
    assert trainer.fit()["eval/accuracy"] > 0.8


@pytest.mark.gpu
def test_cuda_fp16_trains_with_a_gradient_scaler(model, loaders):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        loaders[0],
        loaders[1],
        optimizers=optimizer,
        max_duration="4ep",
        device="cuda",
        precision="fp16",
    )
    assert trainer.state.grad_scaler is not None
    assert trainer.fit()["eval/accuracy"] > 0.8


# The loop contract


class EventLog(Callback):
    def __init__(self):
        self.log = []
        for event in Event:
            setattr(self, event.value, self._recorder(event.value))

    def _recorder(self, name):
        def record(state):
            self.log.append((name, state.timestamp.epoch, state.timestamp.batch_in_epoch))

        return record


def train_batch(epoch, batch):
    """One training batch's events, with the clock as each event sees it."""
    during = [
        "batch_start", "before_forward", "after_forward", "before_loss", "after_loss",
        "before_backward", "after_backward", "before_optimizer_step",
    ]  # fmt: skip
    return [(name, epoch, batch) for name in during] + [("batch_end", epoch, batch + 1)]


def evaluation(epoch, num_batches):
    per_batch = ["eval_batch_start", "eval_before_forward", "eval_after_forward", "eval_batch_end"]
    return (
        [("eval_start", epoch, 0)]
        + [(name, epoch, 0) for _ in range(num_batches) for name in per_batch]
        + [("eval_end", epoch, 0)]
    )


def make_trainer(model, optimizer, callbacks=(), algorithms=(), num_samples=64, **kwargs):
    inputs, targets = torch.randn(num_samples, 8), torch.randint(0, 4, (num_samples,))
    dataset = TensorDataset(inputs, targets)
    kwargs.setdefault("eval_dataloader", DataLoader(dataset, batch_size=64))
    return Trainer(
        model,
        DataLoader(dataset, batch_size=32),
        optimizers=optimizer,
        callbacks=list(callbacks),
        algorithms=list(algorithms),
        device="cpu",
        **{"max_duration": "2ep", **kwargs},
    )


def test_two_epochs_with_evaluation_fire_exactly_this_sequence(model, optimizer):
    recorder = EventLog()
    trainer = make_trainer(model, optimizer, callbacks=[recorder])
    trainer.fit()
    expected = (
        [("init", 0, 0), ("fit_start", 0, 0)]
        + [("epoch_start", 0, 0)] + train_batch(0, 0) + train_batch(0, 1) + [("epoch_end", 1, 0)]
        + evaluation(1, num_batches=1)
        + [("epoch_start", 1, 0)] + train_batch(1, 0) + train_batch(1, 1) + [("epoch_end", 2, 0)]
        + evaluation(2, num_batches=1)
        + [("fit_end", 2, 0)]
    )  # fmt: skip
    assert recorder.log == expected


def test_batch_duration_ends_mid_epoch_without_epoch_end_and_evaluates_once(model, optimizer):
    recorder = EventLog()
    trainer = make_trainer(model, optimizer, callbacks=[recorder], max_duration="3ba")
    trainer.fit()
    names = [name for name, _, _ in recorder.log]
    assert names.count("batch_end") == 3
    assert names.count("epoch_end") == 1, "only the first epoch ran to its end"
    assert names.count("eval_start") == 2, "after epoch 1, then once more at the end of training"
    assert names[-1] == "fit_end"
    assert trainer.state.timestamp.batch == 3


def test_sample_duration_counts_samples(model, optimizer):
    trainer = make_trainer(model, optimizer, max_duration="96sp", eval_dataloader=None)
    trainer.fit()
    assert (trainer.state.timestamp.batch, trainer.state.timestamp.samples) == (3, 96)


def test_eval_interval_in_batches(model, optimizer):
    recorder = EventLog()
    trainer = make_trainer(
        model, optimizer, callbacks=[recorder], max_duration="4ba", eval_interval="3ba"
    )
    trainer.fit()
    evals = [(epoch, batch) for name, epoch, batch in recorder.log if name == "eval_end"]
    assert evals == [(1, 1), (2, 0)], "after batch 3 (mid-epoch) and at the end of training"


def test_a_plugin_can_stop_training_mid_epoch(model, optimizer):
    class StopAfterThree(Algorithm):
        def batch_end(self, state):
            if state.timestamp.batch == 3:
                state.request_stop("enough")

    recorder = EventLog()
    trainer = make_trainer(
        model, optimizer, algorithms=[StopAfterThree()], callbacks=[recorder], max_duration="10ep"
    )
    trainer.fit()
    assert trainer.state.timestamp.batch == 3
    assert trainer.state.stop_reason == "enough"
    names = [name for name, _, _ in recorder.log]
    assert names[-(len(evaluation(0, 1)) + 1) :] == [name for name, _, _ in evaluation(0, 1)] + [
        "fit_end"
    ]


def test_stop_requested_at_epoch_end_lets_its_evaluation_run(model, optimizer):
    class StopAtEpochEnd(Callback):
        def epoch_end(self, state):
            state.request_stop("converged")

    trainer = make_trainer(model, optimizer, callbacks=[StopAtEpochEnd()], max_duration="10ep")
    metrics = trainer.fit()
    assert trainer.state.timestamp.epoch == 1
    assert "eval/accuracy" in metrics


def test_request_stop_needs_a_reason(model, optimizer):
    trainer = make_trainer(model, optimizer)
    with pytest.raises(ValueError, match=r"request_stop\(reason=''\)"):
        trainer.state.request_stop("")


SAMPLES = TensorDataset(torch.randn(3, 8), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize(
    ("loader", "message"),
    [
        (
            DataLoader(SAMPLES, batch_size=4, drop_last=True),
            "its dataset has 3 samples, fewer than batch_size=4, and drop_last=True drops "
            "that partial batch; use a batch_size of at most 3, or drop_last=False.",
        ),
        (
            DataLoader(TensorDataset(torch.zeros(0, 8)), batch_size=4),
            "its dataset has no samples (batch_size=4, drop_last=False); give it training data.",
        ),
        (
            DataLoader(SAMPLES, batch_size=2, sampler=torch.utils.data.SubsetRandomSampler([])),
            "its SubsetRandomSampler gives it 0 of the dataset's 3 samples (batch_size=2, "
            "drop_last=False); give it training data.",
        ),
        (
            DataLoader(
                SAMPLES,
                batch_size=2,
                drop_last=True,
                sampler=DistributedSampler(SAMPLES, num_replicas=2, rank=0, drop_last=True),
            ),
            "its DistributedSampler gives it 1 of the dataset's 3 samples, fewer than "
            "batch_size=2, and drop_last=True drops that partial batch; use a batch_size of "
            "at most 1, or drop_last=False.",
        ),
    ],
    ids=[
        "smaller-than-a-batch-with-drop-last",
        "an-empty-dataset",
        "a-sampler-of-none",
        "a-rank-s-share-smaller-than-a-batch",
    ],
)
def test_a_dataloader_with_no_batch_is_refused_when_the_trainer_is_built(
    model, optimizer, loader, message
):
    with pytest.raises(
        ValueError, match=rf"^train_dataloader yields no batches: {re.escape(message)}$"
    ):
        Trainer(model, loader, max_duration="1ep", optimizers=optimizer, device="cpu")


def test_an_empty_list_evaluates_but_fit_refuses_it_before_any_event(model, optimizer):
    events = EventLog()
    trainer = Trainer(
        model, [], [(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))], max_duration="1ep",
        optimizers=optimizer, device="cpu", callbacks=[events],
    )  # fmt: skip
    assert "eval/loss" in trainer.eval()
    events.log.clear()
    with pytest.raises(
        ValueError,
        match=r"^fit\(\) has nothing to train on: train_dataloader has no batches \(len 0\)\. "
        r"A Trainer built without training data can eval\(\) and predict\(\) only\.$",
    ):
        trainer.fit()
    assert events.log == []


def test_batches_without_a_length_that_end_at_once_are_an_error_of_the_epoch(model, optimizer):
    class NoBatches:
        def __iter__(self):
            return iter(())

    trainer = Trainer(model, NoBatches(), max_duration="1ep", optimizers=optimizer, device="cpu")
    with pytest.raises(ValueError, match=r"^train_dataloader yielded no batches in an epoch"):
        trainer.fit()


def test_targets_are_read_after_before_loss_and_inputs_after_before_forward(model, optimizer):
    class SwapTargets(Algorithm):
        def before_forward(self, state):
            self.inputs_seen = state.batch[0]

        def before_loss(self, state):
            state.batch = (state.batch[0], torch.zeros_like(state.batch[1]))

    seen = {}

    def loss_fn(outputs, targets):
        seen.setdefault("targets", targets)  # the first call: training, not evaluation
        return torch.nn.functional.cross_entropy(outputs, targets)

    trainer = make_trainer(
        model, optimizer, algorithms=[SwapTargets()], loss_fn=loss_fn, max_duration="1ba"
    )
    trainer.fit()
    assert torch.equal(seen["targets"], torch.zeros(32, dtype=torch.long))


class RecordGradients(Callback):
    """Each batch's loss and the largest absolute gradient of any parameter."""

    def __init__(self):
        self.losses, self.largest_gradients = [], []

    def after_backward(self, state):
        self.losses.append(state.loss.item())
        gradients = [p.grad.abs().max() for p in state.model.parameters()]
        self.largest_gradients.append(torch.stack(gradients).max().item())


def segmentation_crops(num_crops=12, size=6, seed=0):
    """(N, 3, H, W) images whose pixel class is its largest channel; crops 4 to 7 are all
    ignored (-100), so that with batches of 4 the second batch has nothing to learn from."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_crops, 3, size, size, generator=generator)
    labels = images.argmax(dim=1)
    labels[:, 0, :] = -100  # some ignored pixels in every crop
    labels[4:8] = -100
    return TensorDataset(images, labels)


@pytest.mark.parametrize("method", ["hard labels", "label smoothing", "online label smoothing"])
def test_a_segmentation_batch_whose_every_pixel_is_ignored_neither_stops_nor_moves_the_run(
    method,
):
    from loom.algorithms import LabelSmoothing, OnlineLabelSmoothing

    algorithms = {
        "hard labels": [],
        "label smoothing": [LabelSmoothing(0.1)],
        "online label smoothing": [OnlineLabelSmoothing(n_classes=3)],
    }[method]
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, kernel_size=1)  # (N, C, H, W) logits, a class per pixel
    recorder = RecordGradients()
    data = segmentation_crops()
    trainer = Trainer(
        model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4),
        optimizers=torch.optim.SGD(model.parameters(), lr=0.5), max_duration="2ep",
        algorithms=algorithms, callbacks=[recorder], finite_check_interval=1, device="cpu",
    )  # fmt: skip
    metrics = trainer.fit()  # the finite-loss check runs after every batch
    for empty in (1, 4):  # the second batch of each epoch
        assert recorder.losses[empty] == 0.0
        assert recorder.largest_gradients[empty] == 0.0, "torch's gradient: zero"
    assert all(gradient > 0 for i, gradient in enumerate(recorder.largest_gradients) if i % 3 != 1)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values()), metrics
    assert metrics["eval/accuracy"] > 0.6
    if method == "online label smoothing":
        assert torch.isfinite(algorithms[0].matrix).all()


# The loop's extension points: state.evaluate and state.recompute_gradients


def test_state_evaluate_measures_another_model_firing_nothing_and_changing_nothing(
    model, optimizer
):
    recorder = EventLog()
    trainer = make_trainer(model, optimizer, callbacks=[recorder], max_duration="1ep")
    trainer.fit()
    state = trainer.state
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight.mul_(-1)
    before_events, before_metrics = len(recorder.log), dict(state.metrics)
    results = state.evaluate(other)
    assert len(recorder.log) == before_events
    assert state.metrics == before_metrics
    alone = make_trainer(
        other, torch.optim.SGD(other.parameters(), lr=0.1), eval_dataloader=state.eval_dataloader
    ).eval()
    assert results == pytest.approx(alone)
    assert results["eval/loss"] != state.metrics["eval/loss"]
    with pytest.raises(TypeError, match=r"state.evaluate\(model\): model must be a Module"):
        state.evaluate("model")


def test_the_extension_points_need_the_trainer_and_a_dataloader(model, optimizer):
    trainer = make_trainer(model, optimizer, eval_dataloader=None)
    with pytest.raises(ValueError, match=r"state.evaluate\(model\) needs a dataloader"):
        trainer.state.evaluate(model)
    alone = dataclasses.replace(trainer.state, _loop=None)
    with pytest.raises(RuntimeError, match=r"state.recompute_gradients\(\) calls back into"):
        alone.recompute_gradients()
