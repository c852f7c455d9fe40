"""The step implementation a job's optimizer gets: torch's fused kernel where the job
leaves the choice to loom, the same training to float rounding, and what a job sets kept."""

import copy

import pytest
import torch

from loom.config.build import build_job
from loom.config.job import resolve_job
from loom.optim.implementation import fastest_step

CPU = torch.device("cpu")


def weights():
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_left_to_loom_the_cpu_step_is_fused(optimizer):
    assert fastest_step(optimizer, {"lr": 0.1, "fused": None, "foreach": None}, weights(), CPU) == {
        "lr": 0.1,
        "fused": True,
        "foreach": None,
    }


@pytest.mark.gpu
def test_on_cuda_the_step_is_fused_and_trains_as_the_loop():
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    fused_model = torch.nn.Linear(8, 3).to(cuda)
    loop_model = copy.deepcopy(fused_model)
    chosen = fastest_step(torch.optim.AdamW, {"lr": 0.01}, fused_model.parameters(), cuda)
    assert chosen == {"lr": 0.01, "fused": True}
    fused = torch.optim.AdamW(fused_model.parameters(), **chosen)
    loop = torch.optim.AdamW(loop_model.parameters(), lr=0.01, foreach=False)
    inputs = torch.randn(16, 8, device=cuda)
    for model, optimizer in ((fused_model, fused), (loop_model, loop)):
        for _ in range(20):
            optimizer.zero_grad()
            model(inputs).square().mean().backward()
            optimizer.step()
    torch.testing.assert_close(fused_model.weight, loop_model.weight, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("optimizer", "arguments", "parameters", "device"),
    [
        (torch.optim.SGD, {"foreach": True}, weights(), CPU),
        (torch.optim.SGD, {"fused": False}, weights(), CPU),
        (torch.optim.Adam, {"differentiable": True}, weights(), CPU),
        (torch.optim.Adam, {}, [torch.zeros(3, dtype=torch.int64)], CPU),
        (torch.optim.Adam, {}, weights(), torch.device("meta")),
        (torch.optim.RMSprop, {}, weights(), CPU),  # no fused step in torch
        (torch.optim.Adagrad, {}, weights(), CPU),  # a fused step on the CPU only: not chosen
    ],
    ids=[
        "foreach set",
        "fused set",
        "differentiable",
        "integer",
        "other device",
        "no fused",
        "not measured",
    ],
)
def test_otherwise_the_arguments_stay_as_they_are(optimizer, arguments, parameters, device):
    assert fastest_step(optimizer, arguments, parameters, device) == arguments


JOB = {
    "seed": 0,
    "model": {"name": "small_cnn", "width": 8},
    "data": {"train": {"name": "digits", "split": "train", "batch_size": 64, "loader": "memory"}},
    "optimizer": {"name": "adamw", "lr": 0.01},
    "trainer": {"max_duration": "20ba", "device": "cpu"},
}


def trained(**optimizer):
    job = copy.deepcopy(JOB)
    job["optimizer"].update(optimizer)
    parts = build_job(resolve_job(job))
    trainer = parts.trainer()
    trainer.fit()
    return parts.optimizer, trainer.state.model.state_dict()


@pytest.mark.parametrize(
    "optimizer", [{"name": "adamw", "lr": 0.01}, {"name": "sgd", "lr": 0.1, "momentum": 0.9}]
)
def test_a_job_s_fused_default_trains_as_the_loop_to_float_rounding(optimizer):
    fused, fused_weights = trained(**optimizer)
    loop, loop_weights = trained(**optimizer, foreach=False)
    assert fused.defaults["fused"] is True
    assert (loop.defaults["fused"], loop.defaults["foreach"]) in ((None, False), (False, False))
    for key, value in loop_weights.items():
        torch.testing.assert_close(fused_weights[key], value, rtol=1e-5, atol=1e-5)
