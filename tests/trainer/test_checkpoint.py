"""Checkpoints: what they hold, how a bad one is refused (leaving the run as it was), and
resuming: a run interrupted anywhere and resumed ends bitwise as the uninterrupted run."""

import copy
import json
import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import (
    EMA,
    SAM,
    SWA,
    LabelSmoothing,
    MixUpOrCutMix,
    OnlineLabelSmoothing,
)
from loom.callbacks import Checkpoint, MetricsLogger, latest_checkpoint
from loom.trainer import (
    Algorithm,
    CheckpointError,
    NonFiniteLossError,
    TrainingInterrupted,
    load_algorithm_states,
    load_checkpoint,
)
from tests.conftest import SignalAt, tiny_trainer


def test_weights_only_loading_starts_a_fresh_run(saved):
    trainer, path = saved
    fine_tuned = tiny_trainer(load_path=path, weights_only=True)
    assert fine_tuned.state.timestamp.batch == 0
    for key, value in fine_tuned.state.model.state_dict().items():
        assert torch.equal(value, trainer.state.model.state_dict()[key])
    assert fine_tuned.state.optimizers[0].state == {}


class ForeignObject:
    """Something a training script might pickle into a file, which loom never unpickles."""


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),
            r"cannot be read: it is truncated, corrupt or not a checkpoint",
        ),
        (
            lambda path: path.write_bytes(b"not a checkpoint at all"),
            r"cannot be read: it is truncated, corrupt or not a checkpoint",
        ),
        (lambda path: torch.save({"weights": 1}, path), r"is not a loom checkpoint"),
        (
            lambda path: torch.save({"model": ForeignObject()}, path),
            r"holds a Python object \(.*ForeignObject\) besides tensors and plain data, "
            r"which loom never unpickles: it was not written by loom",
        ),
        (  # torch words the refusal of a module it blocks outright differently
            lambda path: torch.save({"model": os.system}, path),
            r"holds a Python object \((posix|nt)\.system\)",
        ),
    ],
    ids=["truncated", "garbage", "foreign", "pickled object", "blocked module"],
)
def test_a_damaged_checkpoint_is_one_clear_error(saved, damage, message):
    _, path = saved
    damage(path)
    before = path.read_bytes()
    fresh = tiny_trainer()
    weights = {k: v.clone() for k, v in fresh.state.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' .*{message}") as error:
        fresh.load_checkpoint(path)
    # Not torch's advice to unpickle the file anyway, nor its terminal colour codes.
    assert "weights_only" not in str(error.value)
    assert "\x1b" not in str(error.value)
    assert path.read_bytes() == before  # nothing on disk touched
    for key, value in fresh.state.model.state_dict().items():
        assert torch.equal(value, weights[key])  # nor the run


def test_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*nope\.pt' does not exist"):
        tiny_trainer(load_path=tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
            r"other shapes: 2\.weight is \(2, 8\) in the checkpoint, \(3, 8\) in the model",
        ),
        (
            nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)),
            r"missing keys 4\.weight, 4\.bias; other shapes: 2\.weight",
        ),
        (nn.Sequential(nn.Linear(4, 2)), r"unexpected keys 2\.weight, 2\.bias"),
    ],
    ids=["shape", "missing", "unexpected"],
)
def test_a_checkpoint_of_another_model_says_what_differs(saved, model, message):
    _, path = saved
    with pytest.raises(
        CheckpointError,
        match=rf"does not fit this model \(Sequential\): .*"
        rf"{message}",
    ):
        tiny_trainer(model=model, load_path=path)


def test_a_compiled_models_checkpoint_loads_uncompiled_and_back(tmp_path):
    torch.manual_seed(0)
    compiled = torch.compile(
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), backend="eager"
    )
    trainer = tiny_trainer(tmp_path / "a", model=compiled, max_duration="1ep")
    trainer.fit()
    path = latest_checkpoint(tmp_path / "a")
    assert all("_orig_mod" not in key for key in load_checkpoint(path)["model"])
    plain = tiny_trainer(tmp_path / "b", load_path=path, max_duration="2ep")
    plain.fit()
    recompiled = torch.compile(
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), backend="eager"
    )
    again = tiny_trainer(model=recompiled, load_path=latest_checkpoint(tmp_path / "b"))
    for key, value in plain.state.model.state_dict().items():
        assert torch.equal(again.state.model._orig_mod.state_dict()[key], value)


def test_a_non_finite_loss_stops_naming_the_batch_and_keeps_the_good_checkpoints(tmp_path):
    def explodes_at_batch_4(outputs, targets):
        loss = nn.functional.cross_entropy(outputs, targets)
        explodes_at_batch_4.calls += 1
        return loss * float("nan") if explodes_at_batch_4.calls == 5 else loss

    explodes_at_batch_4.calls = 0
    trainer = tiny_trainer(tmp_path, loss_fn=explodes_at_batch_4, max_duration="3ep")
    with pytest.raises(
        NonFiniteLossError,
        match=r"not finite at epoch 2, batch 2 of the epoch "
        r"\(batch 5 of the run\)",  # the fifth call: batch 4 as the clock counts
    ) as info:
        trainer.fit()
    assert "raised by callback Checkpoint at event 'batch_end'" in str(info.value.__notes__)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch0-batch3.pt", "epoch1-batch4.pt"]
    # The error says which checkpoint to go back to: the last one, from before the batch.
    assert f"(the latest, from before it: {tmp_path / 'epoch1-batch4.pt'})" in str(info.value)
    assert torch.isfinite(
        torch.stack(
            [
                v.float().sum()
                for v in load_checkpoint(tmp_path / "epoch1-batch4.pt")["model"].values()
            ]
        )
    ).all()


def test_a_non_finite_loss_found_at_an_epoch_end_names_its_own_epoch():
    def nan_at_second_batch(outputs, targets):
        nan_at_second_batch.calls += 1
        loss = nn.functional.cross_entropy(outputs, targets)
        return loss * float("nan") if nan_at_second_batch.calls == 2 else loss

    nan_at_second_batch.calls = 0
    trainer = tiny_trainer(loss_fn=nan_at_second_batch)
    trainer.finite_check_interval = None  # only the epoch end checks
    with pytest.raises(
        NonFiniteLossError, match=r"epoch 1, batch 2 of the epoch \(batch 2 of the run\)"
    ):
        trainer.fit()


def test_the_finite_check_runs_without_a_checkpoint_too():
    def always_nan(outputs, targets):
        return nn.functional.cross_entropy(outputs, targets) * float("nan")

    trainer = tiny_trainer(loss_fn=always_nan)
    trainer.finite_check_interval = 2
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 1 of the epoch"):
        trainer.fit()
    assert trainer.state.timestamp.batch == 2  # found at the first check, not at epoch end


# Resuming

BATCHES_PER_EPOCH = 5  # 40 samples in batches of 8
TOTAL = "4ep"


def make_trainer(folder, algorithm, *, callbacks=(), load_path=None, eval_interval="1ep"):
    torch.manual_seed(0)  # initial weights; a resumed run overwrites them
    inputs = torch.randn(40, 1, 2, 3)  # 2x3 images, so that CutMix has boxes to cut
    features = inputs.flatten(1)
    targets = (features[:, :3].argmax(dim=1) + (features[:, 3] > 1).long()) % 3
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(16, 3),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    return Trainer(
        model,
        DataLoader(TensorDataset(inputs, targets), batch_size=8, shuffle=True),
        DataLoader(TensorDataset(inputs[:16], targets[:16]), batch_size=8),
        max_duration=TOTAL,
        optimizers=optimizer,
        schedulers=scheduler,
        algorithms=[algorithm()],
        callbacks=[
            Checkpoint(folder / "checkpoints", interval="1ba", keep_last=None),
            MetricsLogger(folder / "metrics.jsonl", console=False),
            *callbacks,
        ],
        eval_interval=eval_interval,
        device="cpu",
        seed=0,
        load_path=load_path,
    )


def records(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def final_weights(trainer):
    """The model's weights, and an average's (EMA, SWA) where an algorithm keeps one."""
    weights = {k: v.clone() for k, v in trainer.state.model.state_dict().items()}
    for algorithm in trainer.state.algorithms:
        averaged = getattr(algorithm, "averaged", None)
        if averaged is not None:
            weights.update({f"averaged.{k}": v.clone() for k, v in averaged.state_dict().items()})
    return weights


ALGORITHMS = {
    # Every 2 batches after 3 of warm-up: the clock decides each update, on resume too.
    "ema": lambda: EMA(decay=0.8, every=2, start=3),
    "sam": lambda: SAM(rho=0.1),
    # Averaging and SWALR from epoch 1, annealing over two: their state comes back.
    "swa": lambda: SWA(start_epoch=1, swa_lr=0.05, anneal_epochs=2),
    "label_smoothing": lambda: LabelSmoothing(0.1),
    "online_label_smoothing": lambda: OnlineLabelSmoothing(n_classes=3),
    # MixUp or CutMix, on 80% of the batches: every draw of the three comes back on resume.
    "mixup_or_cutmix": lambda: MixUpOrCutMix(0.4, 1.0, switch_prob=0.5, prob=0.8),
}


@pytest.fixture(scope="module", params=sorted(ALGORITHMS))
def uninterrupted(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    trainer = make_trainer(folder, ALGORITHMS[request.param])
    metrics = trainer.fit()
    return request.param, folder, final_weights(trainer), metrics, trainer


@pytest.mark.parametrize(
    "stop_batch",  # the batch the run stops after: the signal comes during it
    [3, BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH + 1, 4 * BATCHES_PER_EPOCH - 1],
    ids=["mid-epoch", "epoch-boundary", "after-an-eval", "last-batch"],
)
def test_interrupted_and_resumed_ends_bitwise_equal(uninterrupted, tmp_path, stop_batch):
    name, reference_folder, reference_weights, reference_metrics, _ = uninterrupted
    with pytest.raises(TrainingInterrupted, match=r"training stopped on SIGTERM after ") as info:
        make_trainer(tmp_path, ALGORITHMS[name], callbacks=[SignalAt(stop_batch - 1)]).fit()
    assert info.value.exit_status == 128 + signal.SIGTERM
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    assert checkpoint.name.endswith(f"-batch{stop_batch}.pt")
    assert str(checkpoint) in str(info.value)

    resumed = make_trainer(tmp_path, ALGORITHMS[name], load_path=checkpoint)
    assert resumed.state.timestamp.batch == stop_batch
    metrics = resumed.fit()
    for key, value in final_weights(resumed).items():
        assert torch.equal(value, reference_weights[key]), key
    assert metrics == reference_metrics
    assert records(tmp_path) == records(reference_folder)


def test_resuming_from_any_saved_batch_repeats_the_rest(uninterrupted, tmp_path):
    name, reference_folder, reference_weights, _, _ = uninterrupted
    for batch in (1, 7, 15):
        (checkpoint,) = (reference_folder / "checkpoints").glob(f"epoch*-batch{batch}.pt")
        resumed = make_trainer(tmp_path / str(batch), ALGORITHMS[name], load_path=checkpoint)
        resumed.fit()
        for key, value in final_weights(resumed).items():
            assert torch.equal(value, reference_weights[key]), (batch, key)


def test_online_label_smoothing_statistics_survive_a_resume(uninterrupted, tmp_path):
    name, reference_folder, _, _, reference = uninterrupted
    if name != "online_label_smoothing":
        pytest.skip("online label smoothing only")
    checkpoint = reference_folder / "checkpoints" / "epoch1-batch8.pt"
    resumed = make_trainer(tmp_path, ALGORITHMS[name], load_path=checkpoint)
    resumed.fit()
    (mine,), (theirs,) = resumed.state.algorithms, reference.state.algorithms
    assert torch.equal(mine.matrix, theirs.matrix)


def test_signal_handlers_are_restored_after_fit(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    make_trainer(tmp_path, ALGORITHMS["label_smoothing"]).fit()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with pytest.raises(TrainingInterrupted):
        make_trainer(
            tmp_path / "2", ALGORITHMS["label_smoothing"], callbacks=[SignalAt(2, signal.SIGINT)]
        ).fit()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_eval_in_batches_resumes_with_the_pending_evaluation(tmp_path):
    reference = make_trainer(tmp_path / "a", ALGORITHMS["label_smoothing"], eval_interval="4ba")
    reference.fit()
    checkpoint = tmp_path / "a" / "checkpoints" / "epoch0-batch4.pt"  # saved before its eval
    resumed = make_trainer(
        tmp_path / "b", ALGORITHMS["label_smoothing"], eval_interval="4ba", load_path=checkpoint
    )
    resumed.fit()
    assert final_weights(resumed).keys() == final_weights(reference).keys()
    for key, value in final_weights(resumed).items():
        assert torch.equal(value, final_weights(reference)[key])
    after = [r for r in records(tmp_path / "a") if r["batch"] >= 4]
    assert [r for r in records(tmp_path / "b")] == after


# A refused checkpoint leaves the run as it was


class CountBatches(Algorithm):
    """Stateful, and restored before online label smoothing: a refusal must undo it."""

    def __init__(self):
        self.batches = 0

    def batch_end(self, state):
        self.batches += 1

    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state):
        self.batches = state["batches"]


def refusing_trainer(folder, *, epochs):
    torch.manual_seed(0)
    inputs, targets = torch.randn(24, 6), torch.randint(0, 3, (24,))
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Trainer(
        model,
        DataLoader(TensorDataset(inputs, targets), batch_size=8, shuffle=True),
        max_duration=f"{epochs}ep",
        optimizers=optimizer,
        schedulers=torch.optim.lr_scheduler.StepLR(optimizer, step_size=2),
        algorithms=[CountBatches(), OnlineLabelSmoothing(n_classes=3)],
        callbacks=[Checkpoint(folder, interval="1ep", best_metric=None)],
        device="cpu",
        seed=epochs,
    )


def everything(trainer):
    """Every part of the run a checkpoint could change, copied."""
    state = trainer.state
    return copy.deepcopy(
        {
            "model": state.model.state_dict(),
            "optimizers": [optimizer.state_dict() for optimizer in state.optimizers],
            "schedulers": [scheduler.state_dict() for scheduler in state.schedulers],
            "plugins": [plugin.state_dict() for plugin in [*state.algorithms, *state.callbacks]],
            "clock": state.timestamp.state_dict(),
            "metrics": state.metrics,
            "losses": state.train_losses.state_dict(),
            "epoch_start_rng": state.epoch_start_rng,
            "last_eval_batch": state.last_eval_batch,
        }
    )


def bitwise_equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(bitwise_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(bitwise_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def split_into_two_groups(checkpoint):
    group = checkpoint["optimizers"][0]["param_groups"][0]
    params = group["params"]
    groups = [{**group, "params": params[:2]}, {**group, "params": params[2:]}]
    checkpoint["optimizers"][0]["param_groups"] = groups


MISMATCHES = {
    "model shape": (
        lambda c: c["model"].update({"0.weight": torch.zeros(8, 5)}),
        r"other shapes: 0\.weight is \(8, 5\) in the checkpoint, \(8, 6\) in the model",
    ),
    "model not a mapping": (
        lambda c: c.update(model=[1, 2]),
        r"its 'model' entry is a list, not a mapping",
    ),
    "optimizer groups": (
        split_into_two_groups,
        r"optimizers\[0\] \(SGD\): 2 parameter groups in the checkpoint, 1 here",
    ),
    "another optimizer": (
        lambda c: c["optimizers"][0]["param_groups"][0].update(betas=(0.9, 0.999)),
        r"settings betas that SGD does not: it was written by another optimizer",
    ),
    "optimizer state shape": (
        lambda c: c["optimizers"][0]["state"][0].update(momentum_buffer=torch.zeros(3)),
        r"its 'momentum_buffer' of parameter 0 is \(3,\), this optimizer's is \(8, 6\)",
    ),
    "optimizer state not a mapping": (
        lambda c: c["optimizers"][0].update(state=[1]),
        r"its per-parameter state is not a mapping of mappings",
    ),
    "scheduler count": (lambda c: c.update(schedulers=[]), r"holds 0 schedulers, this run has 1"),
    "another scheduler": (
        lambda c: c.update(schedulers=[{"T_max": 3}]),
        r"schedulers\[0\] \(StepLR\): it was written by another kind of scheduler",
    ),
    "other algorithms": (
        lambda c: c["algorithms"].reverse(),
        r"algorithms \['OnlineLabelSmoothing', 'CountBatches'\], this run has",
    ),
    "a plugin refuses its state": (
        lambda c: c["algorithms"][1]["state"].update(matrix=torch.zeros(4, 4)),
        r"algorithm OnlineLabelSmoothing refused its saved state \(RuntimeError: .*size "
        r"mismatch.*the run was left as it was",
    ),
    "clock": (lambda c: c["timestamp"].pop("samples"), r"has a malformed clock"),
    "format": (lambda c: c.update(format=2), r"has format 2; this loom reads format 1"),
    "no generators": (lambda c: c.pop("rng"), r"holds no 'rng': it cannot resume a run"),
    "losses": (lambda c: c.update(train_losses={}), r"malformed 'train_losses' entry"),
    "generator of another size": (
        lambda c: c["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)),
        r"malformed 'rng' entry: not the generators' states",
    ),
    "python generator emptied": (lambda c: c["rng"].update(python={}), r"malformed 'rng' entry"),
    "metrics": (lambda c: c.update(metrics=[1]), r"malformed 'metrics' entry"),
    "last evaluation": (lambda c: c.update(last_eval_batch="3"), r"malformed 'last_eval_batch'"),
    "plugin entries": (lambda c: c.update(callbacks=[3]), r"malformed 'callbacks' entry"),
    "gradient scaler": (lambda c: c.update(grad_scaler=[1]), r"malformed 'grad_scaler' entry"),
    "training-loss counts": (
        lambda c: c["train_losses"].update(samples=torch.ones(99)),
        r"no sample count for each loss",
    ),
}


@pytest.mark.parametrize("kind", sorted(MISMATCHES))
def test_a_refused_checkpoint_leaves_the_whole_run_bitwise_as_it_was(tmp_path, kind):
    damage, message = MISMATCHES[kind]
    source = refusing_trainer(tmp_path / "source", epochs=2)
    source.fit()
    checkpoint = load_checkpoint(latest_checkpoint(tmp_path / "source"))
    damage(checkpoint)
    path = tmp_path / "damaged.pt"
    torch.save(checkpoint, path)

    run = refusing_trainer(tmp_path / "run", epochs=1)
    run.fit()  # a run with state of its own in every part
    before = everything(run)
    with pytest.raises(CheckpointError, match=message):
        run.load_checkpoint(path)
    assert bitwise_equal(everything(run), before)


def test_the_same_checkpoint_undamaged_is_taken_whole(tmp_path):
    source = refusing_trainer(tmp_path / "source", epochs=2)
    source.fit()
    run = refusing_trainer(tmp_path / "run", epochs=1)
    run.fit()
    run.load_checkpoint(latest_checkpoint(tmp_path / "source"))
    assert bitwise_equal(everything(run), everything(source))


@pytest.mark.skipif(not hasattr(torch.optim, "Adafactor"), reason="torch without Adafactor")
def test_an_optimizer_whose_state_is_not_shaped_like_its_parameters_resumes(tmp_path):
    def adafactor_run(folder, epochs, load_path=None):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
        return Trainer(
            model, batches, max_duration=f"{epochs}ep", device="cpu",
            optimizers=torch.optim.Adafactor(model.parameters(), lr=0.01),
            callbacks=[Checkpoint(folder, interval="1ep")], load_path=load_path,
        )  # fmt: skip

    first = adafactor_run(tmp_path / "a", epochs=1)
    first.fit()  # its second moments are factored: (8, 1) and (1, 6) for an (8, 6) weight
    trained = adafactor_run(tmp_path / "b", epochs=2)
    trained.fit()
    trained.load_checkpoint(latest_checkpoint(tmp_path / "a"))
    assert trained.state.timestamp.batch == 3


def uneven_batches_trainer(folder, load_path=None):
    """10 samples in batches of 4, 4 and 2: train/loss weighs the last batch half."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.randint(0, 3, (10,)))
    return Trainer(
        model, torch.utils.data.DataLoader(data, batch_size=4), max_duration="2ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
        callbacks=[Checkpoint(folder, interval="1ba", keep_last=None)], load_path=load_path,
    )  # fmt: skip


def test_a_resumed_epoch_weighs_its_batches_as_the_uninterrupted_one(tmp_path):
    whole = uneven_batches_trainer(tmp_path / "whole").fit()
    (mid_epoch,) = (tmp_path / "whole").glob("epoch1-batch5.pt")  # 2 batches into epoch 2
    resumed = uneven_batches_trainer(tmp_path / "resumed", load_path=mid_epoch).fit()
    assert resumed["train/loss"] == whole["train/loss"]
    # A checkpoint written before the counts were kept: its batches count as full ones.
    old_format = load_checkpoint(mid_epoch)
    del old_format["train_losses"]["samples"]
    torch.save(old_format, tmp_path / "old.pt")
    from_old = uneven_batches_trainer(tmp_path / "old", load_path=tmp_path / "old.pt").fit()
    assert from_old["train/loss"] == pytest.approx(whole["train/loss"], rel=1e-6)


class HasAModuleCalledModule(torch.nn.Module):
    """A model of one's own, not a wrapper, whose submodule is named ``module``."""

    def __init__(self):
        super().__init__()
        self.module = torch.nn.Linear(3, 2)
        self.head = torch.nn.Linear(2, 2)

    def forward(self, inputs):
        return self.head(self.module(inputs)) * 100 + 7


def test_a_submodule_called_module_is_not_taken_for_a_wrapper(tmp_path):
    from loom.trainer import load_model_weights, model_state_dict, unwrap_model

    model = HasAModuleCalledModule()
    assert unwrap_model(model) is model
    assert sorted(model_state_dict(model)) == [
        "head.bias", "head.weight", "module.bias", "module.weight",
    ]  # fmt: skip
    wrapped = torch.nn.DataParallel(model)
    assert unwrap_model(wrapped) is model
    assert sorted(model_state_dict(wrapped)) == sorted(model_state_dict(model))
    torch.save(model_state_dict(model), tmp_path / "model.pt")
    fresh = HasAModuleCalledModule()
    load_model_weights(fresh, tmp_path / "model.pt")
    inputs = torch.randn(4, 3)
    assert torch.equal(fresh(inputs), model(inputs))
    trainer = Trainer(
        model, [(inputs, torch.tensor([0, 1, 0, 1]))], max_duration="1ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
    )  # fmt: skip
    assert torch.allclose(trainer.predict([(inputs,)]), model(inputs))  # the model's forward


def ema_trainer(folder=None, algorithms=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    return Trainer(
        model,
        batches,
        max_duration="2ep",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        algorithms=algorithms if algorithms is not None else [EMA(decay=0.5)],
        callbacks=[Checkpoint(folder, interval="1ep")] if folder else [],
    )


def test_an_algorithm_s_state_loads_alone_from_a_checkpoint(tmp_path):
    trained = ema_trainer(tmp_path)
    trained.fit()
    path = latest_checkpoint(tmp_path)
    fresh = ema_trainer()
    load_algorithm_states(fresh.state, load_checkpoint(path), path)
    averaged = fresh.state.algorithms[0].model.state_dict()
    for key, value in trained.state.algorithms[0].model.state_dict().items():
        assert torch.equal(averaged[key], value), key
    assert fresh.state.timestamp.batch == 0  # nothing else of the checkpoint
    other = ema_trainer(algorithms=[LabelSmoothing(0.1)])
    with pytest.raises(
        CheckpointError,
        match=r"was written with algorithms \['EMA'\], this run has \['LabelSmoothing'\]: it is "
        r"another job's",
    ):
        load_algorithm_states(other.state, load_checkpoint(path), path)


def test_a_run_stopped_mid_epoch_and_extended_ends_as_the_longer_run(tmp_path):
    """Before, the stopped run's final checkpoint (after its final evaluation) held the
    epoch's losses emptied by its final mean, and the extended run's train/loss left
    out that epoch's first batches."""

    def run(folder, max_duration, load_path=None):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        data = TensorDataset(torch.randn(24, 4), torch.arange(24) % 2)
        trainer = Trainer(
            model, DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=24),
            max_duration=max_duration, device="cpu", seed=0,
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            callbacks=[Checkpoint(folder, interval="1ba")], load_path=load_path,
        )  # fmt: skip
        return trainer.fit()

    longer = run(tmp_path / "longer", "2ep")
    run(tmp_path / "shorter", "4ba")  # 1 batch into epoch 2, then its final evaluation
    assert run(tmp_path / "shorter", "2ep", latest_checkpoint(tmp_path / "shorter")) == longer
