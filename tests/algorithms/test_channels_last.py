import copy
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from loom import Trainer
from loom.algorithms import (
    ChannelsLast,
    CutMix,
    Distillation,
    LabelSmoothing,
    MixUp,
    OnlineLabelSmoothing,
)
from loom.callbacks import latest_checkpoint
from loom.models import CifarResNet
from loom.trainer import TrainingInterrupted
from tests.algorithms.image_runs import image_trainer, weights
from tests.conftest import SignalAt, one_batch

CHANNELS_LAST = torch.channels_last
IMAGES = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def tiny_resnet(width=16):
    """At the default width, 16 input channels or more in each strided 1x1 convolution (the
    shortcuts): oneDNN's CPU kernels get the weight gradients of fewer wrong in
    channels-last (see the warning's test)."""
    torch.manual_seed(0)
    return CifarResNet(num_classes=3, depth=18, width=width)


def initialized(model, algorithm, optimizer=None):
    """Builds a Trainer of ``model`` with ``algorithm``, whose init runs."""
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
    Trainer(
        model, [], max_duration="1ep", device="cpu", optimizers=optimizer, algorithms=[algorithm]
    )


class LayoutSpy(nn.Module):
    """A model that records whether each forward's inputs were channels-last, in
    training and in evaluation, then runs ``model``."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.layouts = {True: [], False: []}

    def forward(self, inputs):
        self.layouts[self.training].append(inputs.is_contiguous(memory_format=CHANNELS_LAST))
        return self.model(inputs)


def test_the_loss_and_gradients_are_those_of_the_contiguous_model():
    model = tiny_resnet()
    plain_gradients, plain = one_batch(model, (IMAGES, LABELS))
    gradients, laid_out = one_batch(model, (IMAGES, LABELS), algorithms=[ChannelsLast()])
    assert laid_out["train/loss"] == pytest.approx(plain["train/loss"], abs=1e-5)
    for gradient, plain_gradient in zip(gradients, plain_gradients, strict=True):
        torch.testing.assert_close(gradient, plain_gradient, rtol=1e-4, atol=1e-4)
    assert any(g.is_contiguous(memory_format=CHANNELS_LAST) and g.dim() == 4 for g in gradients)


def test_init_lays_out_the_4d_weights_keeping_the_parameter_objects():
    model = tiny_resnet()
    parameters = list(model.parameters())
    before = {key: value.clone() for key, value in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    initialized(model, ChannelsLast(), optimizer)
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    assert all(a is b for a, b in zip(optimizer.param_groups[0]["params"], parameters, strict=True))
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert len(weights) == 20  # the stem's, 16 in the blocks, 3 in the shortcuts
    assert all(p.is_contiguous(memory_format=CHANNELS_LAST) for p in weights)
    assert all(p.is_contiguous() for p in model.parameters() if p.dim() != 4)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the same values, laid out anew


@pytest.mark.parametrize(
    "algorithms",
    [
        [ChannelsLast()],
        [MixUp(0.4), ChannelsLast()],
        [ChannelsLast(), MixUp(0.4)],
        [CutMix(1.0), ChannelsLast()],
        [ChannelsLast(), CutMix(1.0)],
    ],
    ids=["alone", "after-mixup", "before-mixup", "after-cutmix", "before-cutmix"],
)
def test_the_forward_gets_channels_last_inputs_in_training_and_evaluation(algorithms):
    model = LayoutSpy(tiny_resnet())
    trainer = Trainer(
        model,
        [(IMAGES, LABELS)] * 2,
        [(IMAGES[:4], LABELS[:4])],
        max_duration="1ep",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        algorithms=algorithms,
    )
    trainer.fit()
    assert model.layouts == {True: [True, True], False: [True]}
    assert not IMAGES.is_contiguous(memory_format=CHANNELS_LAST)  # the data is left as it was


def test_inputs_that_are_not_images_warn_once_and_train():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    batches = [(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))] * 3
    trainer = Trainer(
        model,
        batches,
        batches[:2],
        max_duration="2ep",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        algorithms=[ChannelsLast()],
    )
    with pytest.warns(UserWarning, match="ChannelsLast lays out images") as warned:
        metrics = trainer.fit()
    ours = [w for w in warned if "ChannelsLast" in str(w.message)]
    assert len(ours) == 1
    assert str(ours[0].message) == (
        "ChannelsLast lays out images, 4-D floating-point tensors (N, C, H, W), but the "
        "inputs at the run's input_key are float32 (4, 5) on cpu: channels-last does "
        "nothing for them, and they are left as they are (the model's weights stay "
        "channels-last)."
    )
    assert math.isfinite(metrics["eval/loss"])


def test_a_strided_1x1_convolution_of_few_channels_on_the_cpu_warns():
    model = tiny_resnet(width=4)
    with pytest.warns(
        UserWarning,
        match=r"ChannelsLast on the CPU: stages\.2\.shortcut\.0 is a 1x1 convolution of "
        r"stride \(2, 2\) with 4 input channels, whose weight gradients .*\(oneDNN issue #6035\)",
    ):
        initialized(model, ChannelsLast())


# The inputs-only layout's 1x1 weight gradients have other strides for their size-1
# dimensions than the weights: DDP says so once, about speed.
@pytest.mark.filterwarnings("ignore:Grad strides do not match bucket view strides")
def test_a_model_given_inside_ddp_keeps_its_weights_and_right_gradients(one_process_group):
    model = tiny_resnet()
    plain = copy.deepcopy(model)
    wrapped = DistributedDataParallel(model)
    state = SimpleNamespace(model=wrapped, device=torch.device("cpu"))
    with pytest.warns(
        UserWarning, match=r"ChannelsLast: the model was given to the Trainer inside Distrib"
    ):
        ChannelsLast().init(state)
    assert all(p.is_contiguous() for p in model.parameters())
    images = IMAGES.contiguous(memory_format=CHANNELS_LAST)
    F.cross_entropy(wrapped(images), LABELS).backward()
    F.cross_entropy(plain(images), LABELS).backward()
    for parameter, reference in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(parameter.grad, reference.grad, rtol=1e-5, atol=1e-6)


def test_under_ddp_a_model_laid_out_before_the_trainer_is_left_so(one_process_group):
    model = tiny_resnet().to(memory_format=CHANNELS_LAST)
    state = SimpleNamespace(model=DistributedDataParallel(model), device=torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ChannelsLast().init(state)
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=CHANNELS_LAST) for p in weights)


def test_an_input_key_of_the_wrong_form_is_refused():
    with pytest.raises(TypeError, match=r"input_key=1\.5 is not a batch key"):
        ChannelsLast(input_key=1.5)
    assert repr(ChannelsLast()) == "ChannelsLast()"


# A resumed run, and runs with other algorithms


def test_interrupted_mid_epoch_and_resumed_ends_bitwise_equal(tmp_path):
    reference = image_trainer(tmp_path / "whole", tiny_resnet, [ChannelsLast()])
    reference_metrics = reference.fit()
    with pytest.raises(TrainingInterrupted, match="training stopped on SIGTERM"):
        image_trainer(
            tmp_path / "cut", tiny_resnet, [ChannelsLast()], callbacks=[SignalAt(2)]
        ).fit()
    checkpoint = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    assert checkpoint.name == "epoch0-batch3.pt"  # mid-epoch: 5 batches an epoch
    resumed = image_trainer(tmp_path / "cut", tiny_resnet, [ChannelsLast()], load_path=checkpoint)
    assert resumed.state.model.stem[0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    metrics = resumed.fit()
    for key, value in weights(resumed).items():
        assert torch.equal(value, weights(reference)[key]), key
    assert metrics == reference_metrics


@pytest.mark.parametrize("first", [True, False], ids=["listed-first", "listed-second"])
@pytest.mark.parametrize(
    "other",
    [
        lambda: LabelSmoothing(0.1),
        lambda: OnlineLabelSmoothing(n_classes=3),
        lambda: Distillation(LayoutSpy(tiny_resnet()), alpha=0.5),
    ],
    ids=["label_smoothing", "online_label_smoothing", "distillation"],
)
def test_trains_with_other_algorithms_listed_either_side(tmp_path, other, first):
    laid_out, algorithm = ChannelsLast(), other()
    algorithms = [laid_out, algorithm] if first else [algorithm, laid_out]
    trainer = image_trainer(tmp_path, tiny_resnet, algorithms, duration="1ep")
    notes = trainer.engine.composition_notes
    if isinstance(algorithm, Distillation):
        # The teacher reads the inputs the student got, whichever is listed first.
        side = "after" if first else "before"
        assert notes == [
            "Distillation reads the inputs at after_forward as the model's forward gets "
            f"them, changed by ChannelsLast: it must stay listed {side} ChannelsLast."
        ]
    else:
        assert notes == []
    metrics = trainer.fit()
    assert math.isfinite(metrics["train/loss"])
    assert math.isfinite(metrics["eval/loss"])
    assert trainer.state.model.stem[0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    if isinstance(algorithm, Distillation):  # the teacher got the student's inputs
        assert algorithm.teacher.layouts == {True: [], False: [True] * 5}
    if isinstance(algorithm, OnlineLabelSmoothing):  # learned from the epoch
        assert not torch.equal(algorithm.matrix, OnlineLabelSmoothing(n_classes=3).matrix)
