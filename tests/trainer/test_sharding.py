"""The fsdp strategy in one process: its options and refusals, sharding a model (in a
process group of one), and a run's sharded checkpoint folders, which one process
writes and reads without a process group. Two and three ranks: test_fsdp.py."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import EMA, SAM, SWA, ChannelsLast, LabelSmoothing, OnlineLabelSmoothing
from loom.callbacks import Checkpoint, latest_checkpoint
from loom.optim.implementation import fastest_step
from loom.trainer import CheckpointError, Strategy, load_checkpoint, load_model_weights
from loom.trainer.sharding import (
    check_fits_sharding,
    even_out_forwards,
    full_model_state_dict,
    is_sharded,
    most_batches,
    shard_model,
)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ddp", Strategy()),
        ("fsdp", Strategy("fsdp")),
        ({"name": "fsdp", "blocks": ["Linear"]}, Strategy("fsdp", blocks=("Linear",))),
        ({"name": "fsdp", "reshard_after_forward": False}, Strategy("fsdp", None, False)),
    ],
)
def test_a_strategy_is_a_name_or_a_mapping(value, expected):
    assert Strategy.parse(value) == expected
    assert Strategy.parse(expected) is expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("zero3", r"strategy='zero3' is not a strategy; expected 'ddp' or 'fsdp'"),
        (3, r"strategy=3 must be 'ddp', 'fsdp' or a mapping"),
        ({"blocks": ["Linear"]}, r"has no 'name'; give 'ddp' or 'fsdp'"),
        ({"name": "fsdp", "block": ["Linear"]}, r"unknown option 'block'; fsdp takes blocks"),
        ({"name": "ddp", "blocks": ["Linear"]}, r"unknown option|options of 'fsdp', not 'ddp'"),
        ({"name": "fsdp", "blocks": "Linear"}, r"strategy.blocks='Linear' must be a list"),
        ({"name": "fsdp", "blocks": [nn.Linear]}, r"each must be a class name"),
        ({"name": "fsdp", "reshard_after_forward": "no"}, r"must be true or false"),
    ],
)
def test_a_bad_strategy_is_refused_naming_it(value, message):
    with pytest.raises(ValueError, match=message):
        Strategy.parse(value)


def test_the_trainer_refuses_a_bad_strategy_before_anything_is_built():
    model = mlp()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"strategy='zero3' is not a strategy"):
        Trainer(
            model, [(torch.randn(2, 4), torch.tensor([0, 1]))], max_duration="1ep",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1), strategy="zero3",
        )  # fmt: skip
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize(
    ("algorithm", "why"),
    [
        (EMA(), r"keeps a whole copy of the weights on every rank"),
        (SWA(start_epoch=1), r"keeps a whole copy of the weights on every rank"),
        (SAM(rho=0.05), r"scaled by the norm of the whole gradient"),
        (ChannelsLast(), r"the layout it sets would not hold"),
    ],
)
def test_an_algorithm_that_cannot_train_a_sharded_model_is_refused(algorithm, why):
    sgd = torch.optim.SGD(mlp().parameters(), lr=0.1)
    name = type(algorithm).__name__
    with pytest.raises(ValueError, match=rf"algorithms\[1\] \({name}\) cannot train.*{why}"):
        check_fits_sharding(Strategy("fsdp"), "fp32", [LabelSmoothing(0.1), algorithm], [sgd])
    check_fits_sharding(Strategy("ddp"), "fp32", [algorithm], [sgd])  # DDP takes it


def test_the_algorithms_that_touch_only_the_batch_train_a_sharded_model():
    sgd = torch.optim.SGD(mlp().parameters(), lr=0.1)
    check_fits_sharding(Strategy("fsdp"), "bf16", [OnlineLabelSmoothing(3)], [sgd])


def test_fp16_and_a_fused_sgd_step_are_refused_under_fsdp():
    model = mlp()
    with pytest.raises(
        ValueError, match=r"precision='fp16' with strategy='fsdp'.*use precision='bf16'"
    ):
        check_fits_sharding(Strategy("fsdp"), "fp16", [], [])
    fused_sgd = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
    with pytest.raises(ValueError, match=r"optimizers\[0\] \(SGD\) has fused=True.*foreach=True"):
        check_fits_sharding(Strategy("fsdp"), "fp32", [], [fused_sgd])
    fused_adam = torch.optim.Adam(model.parameters(), fused=True)
    check_fits_sharding(Strategy("fsdp"), "fp32", [], [fused_adam])


def test_a_job_under_fsdp_gets_a_fused_step_only_where_sharded_parameters_have_one():
    weights = [nn.Parameter(torch.zeros(3))]
    cpu = torch.device("cpu")
    assert fastest_step(torch.optim.SGD, {"lr": 0.1}, weights, cpu, sharded=True) == {"lr": 0.1}
    assert fastest_step(torch.optim.AdamW, {}, weights, cpu, sharded=True) == {"fused": True}
    assert fastest_step(torch.optim.SGD, {}, weights, cpu) == {"fused": True}


def test_shard_model_shards_each_block_and_the_optimizer_steps_the_shards(one_process_group):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    shard_model(model, Strategy("fsdp"), "fp32", [optimizer])
    assert [is_sharded(module) for module in (model, *model)] == [True, True, False, True]
    sharded = list(model.parameters())
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in sharded]
    assert all(type(p).__name__ == "DTensor" for p in sharded)
    before = {key: value.clone() for key, value in full_model_state_dict(model).items()}
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    after = full_model_state_dict(model)
    assert not torch.equal(after["0.weight"], before["0.weight"])  # the step reached them
    assert all(value.device.type == "cpu" for value in after.values())


def test_blocks_are_named_by_class_and_a_missing_one_lists_the_model_s(one_process_group):
    model = mlp()
    shard_model(model, Strategy("fsdp", blocks=("Linear",)), "fp32", [])
    assert [is_sharded(module) for module in model] == [True, False, True]
    with pytest.raises(
        ValueError, match=r"has no 'Conv2d'; its classes are Linear, ReLU, Sequential"
    ):
        shard_model(mlp(), Strategy("fsdp", blocks=("Conv2d",)), "fp32", [])
    with pytest.raises(ValueError, match=r"Sequential is the model itself"):
        shard_model(mlp(), Strategy("fsdp", blocks=("Sequential",)), "fp32", [])


def test_an_optimizer_that_has_stepped_is_refused():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    with pytest.raises(ValueError, match=r"optimizers\[0\] \(SGD\) holds state already"):
        check_fits_sharding(Strategy("fsdp"), "fp32", [], [optimizer])


def test_bf16_under_fsdp_is_its_mixed_precision_policy(one_process_group):
    model = mlp()
    shard_model(model, Strategy("fsdp"), "bf16", [])
    outputs = model(torch.randn(5, 4))
    assert outputs.dtype == torch.float32  # the policy casts the outputs back for the loss
    outputs.sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_a_rank_with_fewer_batches_runs_empty_forwards(one_process_group):
    calls = []
    model = mlp()
    shard_model(model, Strategy("fsdp"), "fp32", [])
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    loader = DataLoader(TensorDataset(torch.randn(6, 4)), batch_size=4)
    assert most_batches(model, loader) == 2  # the most of every rank's (one rank here)
    with torch.no_grad():
        even_out_forwards(model, 1, 3, torch.randn(4, 4))
    assert calls == [torch.Size([0, 4]), torch.Size([0, 4])]
    assert most_batches(mlp(), loader) is None  # not sharded: nothing to agree on
    with pytest.raises(TypeError, match=r"loaders with a length.*generator has none"):
        most_batches(model, (batch for batch in loader))
    with pytest.raises(RuntimeError, match=r"no batch to evaluate or predict while another has 2"):
        even_out_forwards(model, 0, 2, None)


def run(folder, max_duration="2ep", load_path=None, strategy="fsdp"):
    """Three batches of 8 an epoch, Adam, OLS; a checkpoint every batch."""
    model = mlp()
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(24, 4, generator=generator), torch.arange(24) % 3)
    trainer = Trainer(
        model,
        DataLoader(data, batch_size=8, shuffle=True),
        DataLoader(data, batch_size=12),
        max_duration=max_duration,
        optimizers=torch.optim.Adam(model.parameters(), lr=0.01),
        algorithms=[OnlineLabelSmoothing(3)],
        callbacks=[
            Checkpoint(
                folder, interval="1ba", keep_last=2, best_metric="eval/loss", best_mode="min"
            )
        ],
        device="cpu",
        seed=0,
        strategy=strategy,
        load_path=load_path,
    )
    trainer.fit()
    return trainer


def test_one_process_under_fsdp_checkpoints_into_folders_and_resumes_exactly(tmp_path):
    whole = run(tmp_path / "whole")
    names = sorted(path.name for path in (tmp_path / "whole").iterdir())
    assert names == ["best-epoch2-batch6", "epoch1-batch6", "epoch2-batch6"]  # pruned folders
    assert latest_checkpoint(tmp_path / "whole").name == "epoch2-batch6"
    assert all((tmp_path / "whole" / name / "run.pt").is_file() for name in names)
    assert whole.state.best_checkpoints[0]["path"].endswith("best-epoch2-batch6")

    run(tmp_path / "half", max_duration="4ba")  # stops mid-epoch: batch 1 of epoch 2
    resumed = run(tmp_path / "half", load_path=tmp_path / "half" / "epoch1-batch4")
    for key, value in whole.state.model.state_dict().items():
        assert torch.equal(resumed.state.model.state_dict()[key], value), key
    assert torch.equal(resumed.state.algorithms[0].matrix, whole.state.algorithms[0].matrix)
    assert resumed.state.metrics == whole.state.metrics


def test_a_sharded_checkpoint_s_weights_load_into_a_plain_model(tmp_path):
    trainer = run(tmp_path, max_duration="1ep")
    folder = latest_checkpoint(tmp_path)
    plain = mlp()
    load_model_weights(plain, folder)
    for key, value in trainer.state.model.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value)
    skeleton = load_checkpoint(folder)
    assert skeleton["sharded"] is True
    assert skeleton["model"]["0.weight"].device.type == "meta"
    # A run of strategy ddp resumes from it too: the folder is read the same way.
    ddp = run(tmp_path / "ddp", max_duration="1ep", load_path=folder, strategy="ddp")
    assert ddp.state.timestamp.batch == 3


def test_a_damaged_or_foreign_folder_is_one_clear_error(tmp_path):
    run(tmp_path, max_duration="1ep")
    folder = latest_checkpoint(tmp_path)
    wider = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    with pytest.raises(CheckpointError, match=r"does not fit this model.*0.weight is \(8, 4\)"):
        load_model_weights(wider, folder)
    (folder / "run.pt").unlink()
    with pytest.raises(CheckpointError, match=r"is a folder without run.pt"):
        load_model_weights(mlp(), folder)


def test_a_folder_of_another_optimizer_is_refused_and_the_run_left_as_it_was(tmp_path):
    run(tmp_path, max_duration="1ep")
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(
        model, [(torch.randn(8, 4), torch.arange(8) % 3)], max_duration="1ep",
        optimizers=optimizer, algorithms=[OnlineLabelSmoothing(3)], device="cpu",
        strategy="fsdp",
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"does not fit optimizers\[0\] \(SGD\)"):
        trainer.load_checkpoint(latest_checkpoint(tmp_path))
    assert optimizer.state == {}  # reading its structure stepped it once; undone
    assert trainer.state.timestamp.batch == 0
