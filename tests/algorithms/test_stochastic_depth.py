import copy
import math
import pickle
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from loom import Trainer
from loom.algorithms import LabelSmoothing, OnlineLabelSmoothing, StochasticDepth
from loom.callbacks import latest_checkpoint
from loom.models import CifarResNet, SmallCNN
from loom.trainer import Callback, TrainingInterrupted
from tests.algorithms.image_runs import image_trainer, weights
from tests.conftest import SignalAt

MODELS = {
    "cifar_resnet18": lambda: CifarResNet(num_classes=3, depth=18, width=4),
    "cifar_resnet50": lambda: CifarResNet(num_classes=3, depth=50, width=2),
    "torchvision_basic": lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3),
    "torchvision_bottleneck": lambda: ResNet(Bottleneck, [1, 1, 1, 1], num_classes=3),
}


def with_stochastic_depth(model, algorithms, optimizer=None):
    """``model`` after the Trainer's init has run ``algorithms`` (one, or a list) on it."""
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
    algorithms = algorithms if isinstance(algorithms, list) else [algorithms]
    Trainer(
        model, [], max_duration="1ep", device="cpu", optimizers=optimizer, algorithms=algorithms
    )
    return model


class BranchRecorder:
    """What each block's stochastic_depth child got and gave, per forward."""

    def __init__(self, model):
        self.blocks = [m for m in model.modules() if hasattr(m, "stochastic_depth")]
        self.seen = [[] for _ in self.blocks]
        for index, block in enumerate(self.blocks):
            block.stochastic_depth.register_forward_hook(self._hook(index))

    def _hook(self, index):
        def record(module, inputs, output):
            self.seen[index].append((inputs[0].detach(), output.detach()))

        return record

    def dropped_rows(self, index):
        """Per forward, whether each row's branch came out all zero."""
        return [
            (output.flatten(1) == 0).all(dim=1) & (branch.flatten(1) != 0).any(dim=1)
            for branch, output in self.seen[index]
        ]


def test_training_drops_whole_branches_at_each_blocks_linear_rate():
    torch.manual_seed(0)
    model = with_stochastic_depth(MODELS["cifar_resnet18"](), StochasticDepth(drop_rate=0.5))
    recorder = BranchRecorder(model)
    model.train()
    model(torch.randn(1024, 3, 8, 8))
    for index, rate in enumerate([0.5 * depth / 8 for depth in range(1, 9)]):
        (dropped,) = recorder.dropped_rows(index)
        # 1024 rows: the standard deviation of the share is at most 0.016.
        assert abs(dropped.float().mean().item() - rate) < 0.08, (index, rate)
        branch, output = recorder.seen[index][0]
        kept = ~dropped
        torch.testing.assert_close(output[kept], branch[kept] / (1 - rate))


def test_batch_mode_drops_the_whole_batchs_branch():
    torch.manual_seed(0)
    algorithm = StochasticDepth(drop_rate=0.6, mode="batch", schedule="uniform")
    model = with_stochastic_depth(MODELS["cifar_resnet18"](), algorithm)
    recorder = BranchRecorder(model)
    for _ in range(40):
        model(torch.randn(4, 3, 8, 8))
    shares = []
    for index in range(8):
        for dropped in recorder.dropped_rows(index):
            assert dropped.all() or not dropped.any()  # all rows or none
            shares.append(dropped.all().item())
    # 320 draws at 0.6: the standard deviation of the share is 0.027.
    assert abs(sum(shares) / len(shares) - 0.6) < 0.12


@pytest.mark.parametrize("name", sorted(MODELS))
def test_evaluation_keeps_every_branch_and_equals_the_plain_model(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    plain = copy.deepcopy(model).eval()
    with_stochastic_depth(model, StochasticDepth(drop_rate=0.5)).eval()
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(images), plain(images))
    assert (
        len([m for m in model.modules() if hasattr(m, "stochastic_depth")])
        == {
            "cifar_resnet18": 8,
            "cifar_resnet50": 16,
            "torchvision_basic": 4,
            "torchvision_bottleneck": 4,
        }[name]
    )


@pytest.mark.parametrize("name", ["cifar_resnet50", "torchvision_basic"])
def test_at_rate_zero_training_computes_what_the_plain_block_does(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    plain = copy.deepcopy(model)
    with_stochastic_depth(model, StochasticDepth(drop_rate=0.0))
    images = torch.randn(4, 3, 16, 16)
    assert torch.equal(model.train()(images), plain.train()(images))


def test_the_linear_and_uniform_schedules_rates():
    linear = StochasticDepth(drop_rate=0.2)
    assert (linear.blocks, linear.rates) == ([], [])
    with_stochastic_depth(MODELS["cifar_resnet18"](), linear)
    assert linear.rates == [0.2 * depth / 8 for depth in range(1, 9)]
    assert linear.blocks == [f"stages.{index}" for index in range(8)]
    uniform = StochasticDepth(drop_rate=0.2, mode="batch", schedule="uniform")
    model = with_stochastic_depth(MODELS["torchvision_basic"](), uniform)
    assert uniform.rates == [0.2] * 4
    assert uniform.blocks == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert [model.get_submodule(name).stochastic_depth.p for name in uniform.blocks] == [0.2] * 4
    assert {model.get_submodule(name).stochastic_depth.mode for name in uniform.blocks} == {"batch"}


def test_surgery_keeps_the_parameters_and_the_state_dict():
    torch.manual_seed(0)
    model = MODELS["torchvision_bottleneck"]()
    keys, parameters = list(model.state_dict()), list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with_stochastic_depth(model, StochasticDepth(), optimizer)
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    assert all(a is b for a, b in zip(optimizer.param_groups[0]["params"], parameters, strict=True))
    # The plain model loads its weights, and they load back (strictly: same keys).
    plain = MODELS["torchvision_bottleneck"]()
    plain.load_state_dict(model.state_dict())
    model.load_state_dict(plain.state_dict())
    assert isinstance(model.layer1[0], Bottleneck)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_the_model_still_drops(how):
    torch.manual_seed(0)
    model = with_stochastic_depth(MODELS["cifar_resnet18"](), StochasticDepth(drop_rate=0.5))
    copied = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    assert type(copied.stages[7]) is type(model.stages[7])
    assert copied.stages[7].stochastic_depth is not model.stages[7].stochastic_depth
    images = torch.randn(2, 3, 8, 8)
    assert torch.equal(copied.eval()(images), model.eval()(images))
    recorder = BranchRecorder(copied)
    copied.train()(torch.randn(256, 3, 8, 8))
    (dropped,) = recorder.dropped_rows(7)
    assert 0.35 < dropped.float().mean().item() < 0.65  # the last block's rate, 0.5


def test_the_model_inside_ddp_gets_it_and_trains(one_process_group):
    torch.manual_seed(0)
    model = MODELS["cifar_resnet18"]()
    wrapped = DistributedDataParallel(model)
    algorithm = StochasticDepth(drop_rate=0.5)
    algorithm.init(SimpleNamespace(model=wrapped))
    assert algorithm.blocks == [f"stages.{index}" for index in range(8)]
    recorder = BranchRecorder(model)
    for _ in range(2):  # DDP's buckets are rebuilt after the first step
        wrapped.zero_grad()
        F.cross_entropy(wrapped(torch.randn(64, 3, 8, 8)), torch.randint(0, 3, (64,))).backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    (_, dropped) = recorder.dropped_rows(7)
    assert 0.3 < dropped.float().mean().item() < 0.7  # the last block's rate, 0.5


def test_a_model_without_residual_blocks_is_refused_naming_what_it_looks_for():
    model = SmallCNN(num_classes=3)
    with pytest.raises(
        ValueError,
        match=r"StochasticDepth found no residual blocks in SmallCNN: it wraps the residual "
        r"blocks of torchvision's ResNets \(torchvision.models.resnet.BasicBlock and "
        r"Bottleneck\) and of loom's CifarResNet .*; use a cifar_resnet or torchvision resnet",
    ) as info:
        with_stochastic_depth(model, StochasticDepth())
    assert "raised by algorithm StochasticDepth at event 'init'" in info.value.__notes__


def test_stochastic_depth_given_twice_is_refused():
    model = MODELS["cifar_resnet18"]()
    with pytest.raises(ValueError, match=r"already drop their branches \(stages\.0, \.\.\.\)"):
        with_stochastic_depth(model, [StochasticDepth(), StochasticDepth()])
    again = MODELS["cifar_resnet18"]()
    with_stochastic_depth(again, StochasticDepth())
    with pytest.raises(ValueError, match=r"in an earlier Trainer of the same model\. List it once"):
        with_stochastic_depth(again, StochasticDepth())


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"drop_rate": 1.0}, ValueError, r"StochasticDepth: drop_rate=1\.0 must lie in \[0, 1\)"),
        ({"drop_rate": -0.1}, ValueError, r"StochasticDepth: drop_rate=-0\.1 must lie in \[0, 1\)"),
        ({"drop_rate": math.nan}, ValueError, r"drop_rate=nan must lie in \[0, 1\): the chance"),
        ({"drop_rate": "0.2"}, TypeError, r"StochasticDepth: drop_rate='0\.2' must be a number"),
        ({"drop_rate": True}, TypeError, r"drop_rate=True must be a number"),
        ({"mode": "column"}, ValueError, r"mode='column' must be one of 'row', 'batch'"),
        ({"schedule": "cosine"}, ValueError, r"schedule='cosine' must be one of 'linear', 'unif"),
    ],
)
def test_arguments_are_checked_at_construction(arguments, error, match):
    with pytest.raises(error, match=match):
        StochasticDepth(**arguments)


def test_repr_shows_what_differs_from_the_defaults():
    assert repr(StochasticDepth()) == "StochasticDepth(drop_rate=0.2)"
    assert (
        repr(StochasticDepth(0.5, mode="batch", schedule="uniform"))
        == "StochasticDepth(drop_rate=0.5, mode='batch', schedule='uniform')"
    )


# A resumed run, and a run with label smoothing


def test_interrupted_mid_epoch_and_resumed_ends_bitwise_equal(tmp_path):
    reference = image_trainer(
        tmp_path / "whole", MODELS["cifar_resnet18"], [StochasticDepth(drop_rate=0.5)]
    )
    reference_metrics = reference.fit()
    with pytest.raises(TrainingInterrupted, match="training stopped on SIGTERM"):
        image_trainer(
            tmp_path / "cut",
            MODELS["cifar_resnet18"],
            [StochasticDepth(drop_rate=0.5)],
            callbacks=[SignalAt(2)],
        ).fit()
    checkpoint = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    assert checkpoint.name == "epoch0-batch3.pt"  # mid-epoch: 5 batches an epoch
    resumed = image_trainer(
        tmp_path / "cut",
        MODELS["cifar_resnet18"],
        [StochasticDepth(drop_rate=0.5)],
        load_path=checkpoint,
    )
    metrics = resumed.fit()
    for key, value in weights(resumed).items():
        assert torch.equal(value, weights(reference)[key]), key
    assert metrics == reference_metrics
    # The draws matter: without them the run ends elsewhere.
    plain = image_trainer(
        tmp_path / "plain", MODELS["cifar_resnet18"], [StochasticDepth(drop_rate=0.0)]
    )
    plain.fit()
    key = "stages.7.conv2.weight"
    assert not torch.equal(weights(plain)[key], weights(reference)[key])


class TargetsSpy(Callback):
    """The targets the loss gets (callbacks run after the algorithms at before_loss)."""

    def __init__(self):
        self.targets = []

    def before_loss(self, state):
        self.targets.append(state.get_targets())


@pytest.mark.parametrize("first", [True, False], ids=["listed-first", "listed-second"])
@pytest.mark.parametrize(
    "smoothing",
    [lambda: LabelSmoothing(0.1), lambda: OnlineLabelSmoothing(n_classes=3)],
    ids=["label_smoothing", "online_label_smoothing"],
)
def test_trains_with_label_smoothing(tmp_path, smoothing, first):
    depth, smoother, spy = StochasticDepth(drop_rate=0.3), smoothing(), TargetsSpy()
    algorithms = [depth, smoother] if first else [smoother, depth]
    trainer = image_trainer(
        tmp_path, MODELS["cifar_resnet18"], algorithms, callbacks=[spy], duration="1ep"
    )
    assert trainer.engine.composition_notes == []  # they act on different things
    recorder = BranchRecorder(trainer.state.model)
    metrics = trainer.fit()
    assert math.isfinite(metrics["train/loss"])
    assert math.isfinite(metrics["eval/loss"])
    # Both acted: the loss got dense soft targets, and branches were dropped.
    assert all(targets.shape == (8, 3) and targets.max() < 1 for targets in spy.targets)
    dropped = torch.cat([rows for index in range(8) for rows in recorder.dropped_rows(index)])
    assert 0 < dropped.float().mean().item() < 0.3
    if isinstance(smoother, OnlineLabelSmoothing):  # learned from the epoch
        assert not torch.equal(smoother.matrix, OnlineLabelSmoothing(n_classes=3).matrix)
