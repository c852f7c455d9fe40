import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

from loom import Trainer
from loom.callbacks import Checkpoint, latest_checkpoint
from loom.trainer.checkpoint import (
    CheckpointError,
    NonFiniteLossError,
    capture_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def tiny_trainer(
    folder=None, model=None, load_path=None, weights_only=False, loss_fn=None, max_duration="2ep"
):
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    return Trainer(
        model,
        batches,
        max_duration=max_duration,
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        callbacks=[Checkpoint(folder, interval="1ba", keep_last=2)] if folder else [],
        load_path=load_path,
        load_weights_only=weights_only,
        loss_fn=loss_fn,
    )


@pytest.fixture
def saved(tmp_path):
    trainer = tiny_trainer(tmp_path / "checkpoints")
    trainer.fit()
    return trainer, latest_checkpoint(tmp_path / "checkpoints")


def test_checkpoints_hold_plain_data_and_keep_the_last_n(saved, tmp_path):
    trainer, path = saved
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    # keep_last=2 of six; saved at batch_end, before the epoch's end moves the clock
    assert names == ["epoch1-batch5.pt", "epoch1-batch6.pt"]
    checkpoint = torch.load(path, weights_only=True)  # nothing to import or run
    assert checkpoint["timestamp"] == {"epoch": 1, "batch": 6, "batch_in_epoch": 3, "samples": 48}
    assert set(checkpoint["model"]) == set(trainer.state.model.state_dict())
    assert trainer.state.checkpoint_path == str(path)


def test_weights_only_loading_starts_a_fresh_run(saved):
    trainer, path = saved
    fine_tuned = tiny_trainer(load_path=path, weights_only=True)
    assert fine_tuned.state.timestamp.batch == 0
    for key, value in fine_tuned.state.model.state_dict().items():
        assert torch.equal(value, trainer.state.model.state_dict()[key])
    assert fine_tuned.state.optimizers[0].state == {}


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
    ],
    ids=["truncated", "garbage", "foreign"],
)
def test_a_damaged_checkpoint_is_one_clear_error(saved, damage, message):
    _, path = saved
    damage(path)
    before = path.read_bytes()
    fresh = tiny_trainer()
    weights = {k: v.clone() for k, v in fresh.state.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' .*{message}"):
        fresh.load_checkpoint(path)
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


def test_a_save_that_dies_halfway_leaves_the_previous_checkpoint(saved, monkeypatch):
    trainer, path = saved
    before = path.read_bytes()

    def dies_halfway(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(capture_checkpoint(trainer.state), path)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["timestamp"]["batch"] == 6
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


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
        match=r"not finite at epoch 1, batch 1 of the epoch "
        r"\(batch 4 of the run\)",
    ) as info:
        trainer.fit()
    assert "raised by callback Checkpoint at event 'batch_end'" in str(info.value.__notes__)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch0-batch3.pt", "epoch1-batch4.pt"]
    assert torch.isfinite(
        torch.stack(
            [
                v.float().sum()
                for v in load_checkpoint(tmp_path / "epoch1-batch4.pt")["model"].values()
            ]
        )
    ).all()


def test_the_finite_check_runs_without_a_checkpoint_too():
    def always_nan(outputs, targets):
        return nn.functional.cross_entropy(outputs, targets) * float("nan")

    trainer = tiny_trainer(loss_fn=always_nan)
    trainer.finite_check_interval = 2
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, batch 0 of the epoch"):
        trainer.fit()
    assert trainer.state.timestamp.batch == 2  # found at the first check, not at epoch end


def test_best_checkpoint_by_metric(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    checkpoint = Checkpoint(tmp_path, interval="1ep", best_metric="eval/loss", best_mode="min")
    trainer = Trainer(
        model,
        data,
        data,
        max_duration="3ep",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[checkpoint],
    )
    trainer.fit()
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["metrics"]["eval/loss"] == checkpoint.best_value
    assert checkpoint.best_value == min(3 * [checkpoint.best_value])
    with pytest.raises(ValueError, match=r"keep_last=0 must be an int >= 1 or None"):
        Checkpoint(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match=r"interval='5sp' counts samples"):
        Checkpoint(tmp_path, interval="5sp")


KILLABLE = textwrap.dedent("""
    import sys, time, torch
    from loom import Trainer
    from loom.callbacks import Checkpoint, latest_checkpoint
    from loom.trainer import Callback

    folder, resume, output = sys.argv[1], sys.argv[2] == "resume", sys.argv[3]

    class Slow(Callback):
        def batch_end(self, state):
            time.sleep(0.05)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    inputs, targets = torch.randn(64, 4), torch.randint(0, 2, (64,))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, targets), batch_size=4, shuffle=True)
    trainer = Trainer(
        model, loader, max_duration="3ep", device="cpu", seed=0,
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        callbacks=[Checkpoint(folder, interval="5ba", keep_last=2), Slow()],
        load_path=latest_checkpoint(folder) if resume else None,
    )
    trainer.fit()
    torch.save(trainer.state.model.state_dict(), output)
""")


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILLABLE)

    def run(folder, mode, output):
        return [sys.executable, str(script), str(folder), mode, str(output)]

    subprocess.run(run(tmp_path / "whole", "fresh", tmp_path / "whole.pt"), check=True)
    process = subprocess.Popen(run(tmp_path / "killed", "fresh", tmp_path / "never.pt"))
    try:
        deadline = time.monotonic() + 60
        while latest_checkpoint(tmp_path / "killed") is None or (
            latest_checkpoint(tmp_path / "killed").name == "epoch0-batch5.pt"
        ):
            assert time.monotonic() < deadline, "no checkpoint within a minute"
            assert process.poll() is None, "the run ended before it was killed"
            time.sleep(0.02)
        process.kill()  # SIGKILL: no handler runs, no last checkpoint
    finally:
        process.wait(timeout=30)
    assert not (tmp_path / "never.pt").exists()
    subprocess.run(run(tmp_path / "killed", "resume", tmp_path / "resumed.pt"), check=True)
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
