import math
import random

import pytest
import torch
import torch.nn.functional as F

from loom import Trainer
from loom.algorithms import CutMix, LabelSmoothing
from loom.functional import soft_cross_entropy
from loom.trainer import Callback, get_batch_item

IMAGES = torch.randn(8, 2, 5, 6, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


class ImageModel(torch.nn.Module):
    """A linear model of images that remembers its inputs."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2 * 5 * 6, 4)
        self.seen = []

    def forward(self, images):
        self.seen.append(images.clone())
        return self.linear(images.flatten(1))


class Spy(Callback):
    """What the loss saw (callbacks run after the algorithms), and what was left after."""

    def __init__(self):
        self.loss_targets, self.after_forward_inputs, self.end_targets = [], [], []

    def after_forward(self, state):
        self.after_forward_inputs.append(get_batch_item(state.batch, 0))

    def before_loss(self, state):
        self.loss_targets.append(get_batch_item(state.batch, 1))

    def batch_end(self, state):
        self.end_targets.append(get_batch_item(state.batch, 1))


def run(algorithms, batches=None, duration="1ba", eval_batches=None):
    torch.manual_seed(0)
    model, spy = ImageModel(), Spy()
    trainer = Trainer(
        model,
        batches or [(IMAGES, LABELS)],
        eval_batches,
        max_duration=duration,
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        algorithms=algorithms,
        callbacks=[spy],
        seed=3,
    )
    metrics = trainer.fit()
    return model, spy, metrics


def expected_cut(alpha=1.0, seed=3, height=5, width=6):
    """The box, its weight and the pairing CutMix draws after Trainer(seed=seed), computed
    as the authors' code does (rand_bbox, then the area-corrected lambda)."""
    random.seed(seed)
    torch.manual_seed(seed)
    lam = random.betavariate(alpha, alpha)
    row, column = random.randrange(height), random.randrange(width)
    cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    top, bottom = max(row - cut_h // 2, 0), min(row + cut_h // 2, height)
    left, right = max(column - cut_w // 2, 0), min(column + cut_w // 2, width)
    weight = 1 - (bottom - top) * (right - left) / (height * width)
    return (top, bottom, left, right), weight, torch.randperm(8)


def test_cutmix_trains_on_the_cut_batch_against_area_weighted_targets_and_restores_it():
    model, spy, metrics = run([CutMix(alpha=1.0)])
    (top, bottom, left, right), weight, permutation = expected_cut()
    assert 0 < weight < 1  # this seed cuts a box: the test means something
    expected = IMAGES.clone()
    expected[:, :, top:bottom, left:right] = IMAGES[permutation, :, top:bottom, left:right]
    torch.testing.assert_close(model.seen[0], expected)
    one_hot = F.one_hot(LABELS, 4).float()
    targets = weight * one_hot + (1 - weight) * one_hot[permutation]
    torch.testing.assert_close(spy.loss_targets[0], targets)
    # The training loss recorded is the loss optimised: against the mixed targets.
    logits = model.linear(expected.flatten(1)).detach()
    assert metrics["train/loss"] == pytest.approx(soft_cross_entropy(logits, targets).item())
    assert spy.after_forward_inputs[0] is IMAGES  # restored after the forward
    assert spy.end_targets[0] is LABELS  # metrics see the true labels


@pytest.mark.parametrize("order", ["smoothing first", "cutmix first"])
def test_with_label_smoothing_in_either_order_the_mixture_is_smoothed_once(order):
    algorithms = [LabelSmoothing(0.2), CutMix(1.0)]
    if order == "cutmix first":
        algorithms.reverse()
    _, spy, _ = run(algorithms)
    _, weight, permutation = expected_cut()
    one_hot = F.one_hot(LABELS, 4).float()
    mixed = weight * one_hot + (1 - weight) * one_hot[permutation]
    torch.testing.assert_close(spy.loss_targets[0], 0.8 * mixed + 0.2 / 4)


def test_prob_is_the_share_of_batches_mixed():
    batches = [(IMAGES, LABELS)] * 200
    model, spy, _ = run([CutMix(alpha=1.0, prob=0.3)], batches, duration="200ba")
    mixed = [targets.is_floating_point() for targets in spy.loss_targets]
    assert 0.2 < sum(mixed) / len(mixed) < 0.4
    for was_mixed, seen in zip(mixed, model.seen, strict=True):
        if not was_mixed:  # an unmixed batch trains as it is, labels and images
            assert torch.equal(seen, IMAGES)
    model, _, _ = run([CutMix(alpha=1.0, prob=0.0)], batches[:5], duration="5ba")
    assert all(torch.equal(seen, IMAGES) for seen in model.seen)


def test_a_dict_batch_is_cut_at_the_runs_keys():
    batch = {"image": IMAGES, "label": LABELS}
    torch.manual_seed(0)
    model = ImageModel()
    Trainer(
        model,
        [batch],
        max_duration="1ba",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        algorithms=[CutMix(alpha=1.0)],
        input_key="image",
        target_key="label",
        seed=3,
    ).fit()
    (top, bottom, left, right), _, permutation = expected_cut()
    expected = IMAGES.clone()
    expected[:, :, top:bottom, left:right] = IMAGES[permutation, :, top:bottom, left:right]
    torch.testing.assert_close(model.seen[0], expected)
    assert batch["image"] is IMAGES


def test_evaluation_is_never_cut():
    model, _, _ = run([CutMix(1.0)], eval_batches=[(IMAGES, LABELS)])
    assert torch.equal(model.seen[-1], IMAGES)  # the final evaluation's forward


def one_batch_trainer(model, batch, prob):
    """A one-batch run of ``model`` with CutMix(prob=prob), not yet fitted."""
    return Trainer(
        model,
        [batch],
        max_duration="1ba",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        algorithms=[CutMix(prob=prob)],
        seed=0,
    )


@pytest.mark.parametrize("prob", [1.0, 0.1])
def test_inputs_that_are_not_images_are_refused_naming_the_plugin_and_the_shape(prob):
    # At the first batch, whether or not its coin says to cut it.
    trainer = one_batch_trainer(torch.nn.Linear(5, 4), (torch.randn(8, 5), LABELS), prob)
    with pytest.raises(
        ValueError,
        match=r"CutMix cuts boxes out of images \(N, C, H, W\), but the inputs at the run's "
        r"input_key are float32 \(8, 5\) on cpu; use MixUp",
    ) as error:
        trainer.fit()
    assert "raised by algorithm CutMix at event 'before_forward'" in error.value.__notes__
    assert trainer.state.timestamp.batch == 0


@pytest.mark.parametrize("prob", [1.0, 0.1])
def test_a_target_per_pixel_is_refused_it_would_not_be_cut_like_its_image(prob):
    # At the first batch, whether or not its coin says to cut it.
    model = torch.nn.Conv2d(2, 3, kernel_size=1)  # a score per class and pixel
    trainer = one_batch_trainer(model, (IMAGES, torch.randint(0, 3, (8, 5, 6))), prob)
    with pytest.raises(
        ValueError,
        match=r"CutMix mixes one target per image, class indices \(N,\) or dense targets "
        r"\(N, C\), but the targets are int64 \(8, 5, 6\) on cpu: a target per pixel",
    ):
        trainer.fit()
    assert trainer.state.timestamp.batch == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"alpha": 0}, r"CutMix: alpha=0 must be a positive, finite number"),
        ({"alpha": -1.0}, r"CutMix: alpha=-1\.0 must be a positive, finite number"),
        ({"alpha": float("inf")}, r"CutMix: alpha=inf must be a positive, finite number"),
        ({"alpha": "1"}, r"CutMix: alpha='1' must be a positive, finite number"),
        ({"prob": 1.5}, r"CutMix: prob=1\.5 must lie in \[0, 1\]"),
        ({"prob": -0.1}, r"CutMix: prob=-0\.1 must lie in \[0, 1\]"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises((TypeError, ValueError), match=message):
        CutMix(**arguments)
