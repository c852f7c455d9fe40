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

CPU = torch.device("cpu")


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
        ({"name": "ddp", "blocks": ["Linear"]}, r"blocks are options of 'fsdp', not 'ddp'"),
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
    model = mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    name = type(algorithm).__name__
    with pytest.raises(ValueError, match=rf"algorithms\[1\] \({name}\) cannot train.*{why}"):
        check_fits_sharding(
            Strategy("fsdp"), model, "fp32", [LabelSmoothing(0.1), algorithm], [sgd]
        )
    check_fits_sharding(Strategy("ddp"), model, "fp32", [algorithm], [sgd])  # DDP takes it


def test_the_algorithms_that_touch_only_the_batch_train_a_sharded_model():
    model = mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    check_fits_sharding(Strategy("fsdp"), model, "bf16", [OnlineLabelSmoothing(3)], [sgd])


def test_fp16_and_a_fused_sgd_step_are_refused_under_fsdp():
    model = mlp()
    with pytest.raises(
        ValueError, match=r"precision='fp16' with strategy='fsdp'.*use precision='bf16'"
    ):
        check_fits_sharding(Strategy("fsdp"), model, "fp16", [], [])
    fused_sgd = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
    with pytest.raises(ValueError, match=r"optimizers\[0\] \(SGD\) has fused=True.*foreach=True"):
        check_fits_sharding(Strategy("fsdp"), model, "fp32", [], [fused_sgd])
    fused_adam = torch.optim.Adam(model.parameters(), fused=True)
    check_fits_sharding(Strategy("fsdp"), model, "fp32", [], [fused_adam])


def test_a_job_under_fsdp_gets_a_fused_step_only_where_sharded_parameters_have_one():
    weights = [nn.Parameter(torch.zeros(3))]
    cpu = torch.device("cpu")
    assert fastest_step(torch.optim.SGD, {"lr": 0.1}, weights, cpu, sharded=True) == {"lr": 0.1}
    assert fastest_step(torch.optim.AdamW, {}, weights, cpu, sharded=True) == {"fused": True}
    assert fastest_step(torch.optim.SGD, {}, weights, cpu) == {"fused": True}


def test_shard_model_shards_each_block_and_the_optimizer_steps_the_shards(one_process_group):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    shard_model(model, Strategy("fsdp"), "fp32", [optimizer], CPU)
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


def test_blocks_are_named_by_class(one_process_group):
    model = mlp()
    shard_model(model, Strategy("fsdp", blocks=("Linear",)), "fp32", [], CPU)
    assert [is_sharded(module) for module in model] == [True, False, True]


def test_blocks_the_model_has_no_class_of_are_refused_in_one_process_too():
    """Before, a run of one process never checked them, and failed once scaled out."""
    for blocks, message in [
        (("Conv2d",), r"has no 'Conv2d'; its classes are Linear, ReLU, Sequential"),
        (("Sequential",), r"Sequential is the model itself"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_fits_sharding(Strategy("fsdp", blocks=blocks), mlp(), "fp32", [], [])
    model = mlp()
    with pytest.raises(
        ValueError, match=r"strategy.blocks: the model \(Sequential\) has no 'Conv2d'"
    ):
        Trainer(
            model, [(torch.randn(2, 4), torch.tensor([0, 1]))], max_duration="1ep",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
            strategy={"name": "fsdp", "blocks": ["Conv2d"]},
        )  # fmt: skip


def test_an_optimizer_of_a_tensor_not_the_model_s_is_refused():
    model, stray = mlp(), nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([*model.parameters(), stray], lr=0.1)
    with pytest.raises(
        ValueError, match=r"optimizers\[0\] \(SGD\) steps a tensor of its parameter group 0"
    ):
        check_fits_sharding(Strategy("fsdp"), model, "fp32", [], [optimizer])


def test_an_optimizer_that_has_stepped_is_refused():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    with pytest.raises(ValueError, match=r"optimizers\[0\] \(SGD\) holds state already"):
        check_fits_sharding(Strategy("fsdp"), model, "fp32", [], [optimizer])


def test_bf16_under_fsdp_is_its_mixed_precision_policy(one_process_group):
    model = mlp()
    shard_model(model, Strategy("fsdp"), "bf16", [], CPU)
    outputs = model(torch.randn(5, 4))
    assert outputs.dtype == torch.float32  # the policy casts the outputs back for the loss
    outputs.sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_a_rank_with_fewer_batches_runs_its_last_batch_again(one_process_group):
    calls = []
    model = mlp()
    shard_model(model, Strategy("fsdp"), "fp32", [], CPU)
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    loader = DataLoader(TensorDataset(torch.randn(6, 4)), batch_size=4)
    assert most_batches(model, loader, CPU) == 2  # the most of every rank's (one rank here)
    with torch.no_grad():
        even_out_forwards(model, 1, 3, torch.randn(2, 4))
    assert calls == [torch.Size([2, 4]), torch.Size([2, 4])]
    assert most_batches(mlp(), loader, CPU) is None  # not sharded: nothing to agree on
    with pytest.raises(TypeError, match=r"loaders with a length.*generator has none"):
        most_batches(model, (batch for batch in loader), CPU)


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


class WithUnused(nn.Module):
    """An MLP with a layer its forward never uses: a parameter with no gradient."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net, self.unused = mlp(), nn.Linear(4, 4)

    def forward(self, inputs):
        return self.net(inputs)


def adam_run(folder, max_duration="2ep", load_path=None, before_fit=None):
    model = WithUnused()
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(24, 4, generator=generator), torch.arange(24) % 3)
    trainer = Trainer(
        model, DataLoader(data, batch_size=8, shuffle=True), max_duration=max_duration,
        optimizers=torch.optim.Adam(model.parameters(), lr=0.01), device="cpu", seed=0,
        callbacks=[Checkpoint(folder, interval="1ba", keep_last=None)], strategy="fsdp",
        load_path=load_path,
    )  # fmt: skip
    if before_fit is not None:
        before_fit(trainer)
    trainer.fit()
    return trainer


def assert_same(first, second):
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def weights_of(trainer):
    return {key: value.clone() for key, value in trainer.state.model.state_dict().items()}


def test_a_model_with_a_parameter_that_gets_no_gradient_resumes_exactly(tmp_path):
    """Before, its folder was refused: a fresh optimizer's state (made by DCP) held the
    unused parameter, the saved one did not."""
    whole = adam_run(tmp_path / "whole")
    adam_run(tmp_path / "half", max_duration="4ba")
    resumed = adam_run(tmp_path / "half", load_path=tmp_path / "half" / "epoch1-batch4")
    assert_same(weights_of(resumed), weights_of(whole))
    unused = resumed.state.model.unused.weight
    assert unused not in resumed.state.optimizers[0].state  # as in the uninterrupted run


def test_a_checkpoint_before_the_first_step_changes_nothing(tmp_path):
    """Before, reading the optimizer's state for it stepped Adam once (DCP makes a state
    that way), and the run trained otherwise."""
    from loom.trainer import checkpoint_name, write_checkpoint

    plain = adam_run(tmp_path / "plain")

    def checkpoint_first(trainer):
        write_checkpoint(trainer.state, tmp_path / checkpoint_name(trainer.state, "start"))
        assert trainer.state.optimizers[0].state == {}

    checkpointed = adam_run(tmp_path / "checkpointed", before_fit=checkpoint_first)
    assert_same(weights_of(checkpointed), weights_of(plain))
    from_start = adam_run(tmp_path / "again", load_path=tmp_path / "start")
    assert_same(weights_of(from_start), weights_of(plain))


def test_a_folder_with_a_shard_missing_is_refused_before_anything_changes(tmp_path):
    adam_run(tmp_path / "first", max_duration="1ep")
    folder = latest_checkpoint(tmp_path / "first")
    (folder / "__0_0.distcp").unlink()
    model = WithUnused()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    checkpoints = Checkpoint(tmp_path / "second")
    trainer = Trainer(
        model, [(torch.randn(8, 4), torch.arange(8) % 3)], max_duration="1ep",
        optimizers=optimizer, device="cpu", strategy="fsdp", callbacks=[checkpoints],
    )  # fmt: skip
    before = weights_of(trainer)
    with pytest.raises(
        CheckpointError, match=r"cannot be read: its shard file __0_0.distcp is missing"
    ):
        trainer.load_checkpoint(folder)
    assert_same(weights_of(trainer), before)
    assert optimizer.state == {}
    assert trainer.state.timestamp.batch == 0
    with pytest.raises(CheckpointError, match=r"its shard file __0_0.distcp is missing"):
        load_model_weights(WithUnused(), folder)
