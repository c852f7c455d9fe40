"""End-to-end Trainer runs on tiny data: it learns, matches a plain loop, checks its arguments."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.trainer import Algorithm, Callback
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
    trainer.state.train_losses.update = lambda loss: (kept.append(loss), keep(loss))
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
    with pytest.raises(IndexError) as raised:
        trainer.fit()
    assert raised.value.__notes__ == [
        "raised by loss_fn(outputs, targets) in training at epoch 0, batch 0 of the epoch, "
        "outputs float32 (4, 4) on cpu, targets int64 (4,) on cpu"
    ]
    wrong_width = [(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))]
    trainer = Trainer(model, wrong_width, optimizers=optimizer, max_duration="1ba", device="cpu")
    with pytest.raises(RuntimeError) as raised:
        trainer.fit()
    assert raised.value.__notes__ == [
        "raised by the model's forward in training at epoch 0, batch 0 of the epoch, "
        "inputs float32 (4, 5) on cpu"
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
