"""Trainer(compile=...): options checked up front, parity with eager, a bounded number of
graphs with algorithms that edit the batch, checkpoints in the model's own keys."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Callback, Trainer
from loom.algorithms import LabelSmoothing, MixUp, OnlineLabelSmoothing
from loom.trainer.checkpoint import capture_checkpoint, save_checkpoint
from loom.trainer.compiling import compile_model, compile_options


class CountingBackend:
    """A torch.compile backend that runs each graph eagerly and counts the graphs made."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph, example_inputs):
        self.graphs += 1
        return graph.forward


class LossRecord(Callback):
    """Each training batch's loss, as the loop saw it."""

    def __init__(self):
        self.losses = []

    def batch_end(self, state):
        self.losses.append(state.loss.item())


def make_trainer(seed=0, num_samples=90, **kwargs):
    torch.manual_seed(seed)
    inputs = torch.randn(num_samples, 6)
    targets = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=20, shuffle=True)
    return Trainer(
        model,
        loader,
        DataLoader(TensorDataset(inputs, targets), batch_size=45),
        max_duration=kwargs.pop("max_duration", "20ba"),
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        device=kwargs.pop("device", "cpu"),
        seed=seed,
        **kwargs,
    )


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_compiled_run_matches_eager_to_1e_5_over_20_steps(backend):
    eager_record, compiled_record = LossRecord(), LossRecord()
    eager = make_trainer(callbacks=[eager_record])
    eager.fit()  # each built then fitted, as the global generator orders the batches
    compiled = make_trainer(compile={"backend": backend}, callbacks=[compiled_record])
    compiled.fit()
    eager_losses, compiled_losses = eager_record.losses, compiled_record.losses
    assert len(eager_losses) == len(compiled_losses) == 20
    assert max(abs(a - b) for a, b in zip(eager_losses, compiled_losses, strict=True)) <= 1e-5
    for a, b in zip(eager.state.model.parameters(), compiled.state.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_inductor_on_the_cpu_matches_eager():
    eager = make_trainer(max_duration="6ba")
    eager.fit()
    compiled = make_trainer(max_duration="6ba", compile=True)
    compiled.fit()
    for a, b in zip(eager.state.model.parameters(), compiled.state.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.gpu
def test_inductor_on_cuda_matches_eager_over_20_steps():
    eager_record, compiled_record = LossRecord(), LossRecord()
    make_trainer(device="cuda", callbacks=[eager_record]).fit()
    make_trainer(device="cuda", compile=True, callbacks=[compiled_record]).fit()
    pairs = zip(eager_record.losses, compiled_record.losses, strict=True)
    assert max(abs(a - b) for a, b in pairs) <= 1e-5


def test_algorithms_that_edit_the_batch_cost_a_bounded_number_of_graphs():
    # Dynamo keeps the graphs of a code object across runs: each count starts afresh.
    torch._dynamo.reset()
    backend = CountingBackend()
    trainer = make_trainer(
        max_duration="5ep",  # 25 batches, each epoch's last one smaller, 5 evaluations
        compile={"backend": backend},
        algorithms=[OnlineLabelSmoothing(alpha=0.5, n_classes=3), MixUp(alpha=0.4)],
    )
    trainer.fit()
    after_one_run = backend.graphs
    # Training and evaluation, each at the full and the last, smaller batch size: a
    # handful of graphs, not one per batch.
    assert 2 <= after_one_run <= 12
    torch._dynamo.reset()
    with_smoothing = CountingBackend()
    make_trainer(
        max_duration="5ep", compile={"backend": with_smoothing}, algorithms=[LabelSmoothing(0.1)]
    ).fit()
    assert 2 <= with_smoothing.graphs <= 8


def test_a_compiled_model_checkpoints_its_own_keys_and_loads_back_both_ways(tmp_path):
    compiled = make_trainer(compile={"backend": "aot_eager"}, max_duration="3ba")
    compiled.fit()
    path = save_checkpoint(capture_checkpoint(compiled.state), tmp_path / "compiled.pt")
    saved = torch.load(path, weights_only=True)["model"]
    assert not any("_orig_mod" in key for key in saved)
    assert set(saved) == set(compiled.state.model.state_dict())
    eager = make_trainer(max_duration="6ba", load_path=path)  # into an uncompiled model
    for key, value in eager.state.model.state_dict().items():
        assert torch.equal(value, saved[key])
    eager.fit()
    eager_path = save_checkpoint(capture_checkpoint(eager.state), tmp_path / "eager.pt")
    back = make_trainer(max_duration="6ba", compile={"backend": "aot_eager"}, load_path=eager_path)
    for key, value in back.state.model.state_dict().items():
        assert torch.equal(value, eager.state.model.state_dict()[key])


@pytest.mark.parametrize(
    ("compile", "error", "named"),
    [
        ({"fullgrahp": True}, ValueError, "did you mean 'fullgraph'"),
        ({"backend": "inductr"}, ValueError, "compile.backend: 'inductr'"),
        ({"mode": "fast"}, ValueError, "compile.mode: 'fast'"),
        ({"options": {"max_autotun": True}}, ValueError, "'max_autotun'"),
        ({"mode": "default", "options": {}}, ValueError, "either mode or options"),
        ("yes", TypeError, "compile='yes'"),
    ],
)
def test_options_torch_does_not_know_are_refused_before_anything_is_built(compile, error, named):
    with pytest.raises(error, match=named.replace("(", r"\(").replace("?", r"\?")):
        compile_options(compile)
    with pytest.raises(error, match=named.replace("(", r"\(").replace("?", r"\?")):
        make_trainer(compile=compile)


def test_under_ddp_the_module_inside_is_compiled_and_trains_as_eager(one_process_group):
    from torch.nn.parallel import DistributedDataParallel

    torch._dynamo.reset()
    backend = CountingBackend()
    inputs = torch.randn(16, 6)
    results = []
    for options in (None, {"backend": backend}):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        wrapped = DistributedDataParallel(model)
        if options is not None:
            compile_model(wrapped, options)
        wrapped(inputs).square().mean().backward()
        results.append([parameter.grad for parameter in model.parameters()])
    assert backend.graphs >= 1  # the module inside DDP ran compiled
    assert not any("_orig_mod" in key for key in wrapped.state_dict())
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)
