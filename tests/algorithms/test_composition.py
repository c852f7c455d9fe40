"""Every pair of shipped algorithms, in both orders: it trains and the loss sees one
target distribution, smoothed once, or it is refused before training, naming both."""

import itertools

import pytest
import torch

from loom import Trainer
from loom.algorithms import (
    CutMix,
    Distillation,
    LabelSmoothing,
    MixUp,
    MixUpOrCutMix,
    OnlineLabelSmoothing,
)
from loom.functional import cross_entropy, distillation_loss, soft_cross_entropy
from loom.trainer import Callback, CompositionError, get_batch_item
from tests.algorithms.test_cutmix import IMAGES, LABELS, ImageModel

SMOOTHING, OLS_ALPHA, TEMPERATURE, KD_ALPHA = 0.2, 0.5, 2.0, 0.5


def teacher():
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 5 * 6, 4))


SHIPPED = {
    "LabelSmoothing": lambda: LabelSmoothing(SMOOTHING),
    "OnlineLabelSmoothing": lambda: OnlineLabelSmoothing(4, OLS_ALPHA, SMOOTHING),
    "MixUp": lambda: MixUp(1.0),
    "CutMix": lambda: CutMix(1.0),
    "MixUpOrCutMix": lambda: MixUpOrCutMix(1.0, 1.0, switch_prob=0.5),
    "Distillation": lambda: Distillation(teacher(), temperature=TEMPERATURE, alpha=KD_ALPHA),
}
MIXERS = {"MixUp", "CutMix", "MixUpOrCutMix"}


def refused(first, second):
    """The rule, written out: which ordered pairs cannot be right, and why."""
    pair = {first, second}
    if first == second:  # two smoothers, two mixers, two replacements of the loss
        return True
    if pair <= MIXERS:  # each batch mixed twice
        return True
    if pair == {"LabelSmoothing", "OnlineLabelSmoothing"}:  # smoothed twice, or OLS too late
        return True
    if second == "OnlineLabelSmoothing" and first in MIXERS:  # OLS needs class indices
        return True
    # The teacher must see the inputs as the student did: listed after the mixer.
    return first == "Distillation" and second in MIXERS


class LossSeen(Callback):
    """Callbacks run after the algorithms: the targets and outputs the loss gets."""

    def before_loss(self, state):
        self.targets = get_batch_item(state.batch, 1)
        self.outputs = state.outputs.detach()


def build(names):
    torch.manual_seed(0)
    model, seen = ImageModel(), LossSeen()
    trainer = Trainer(
        model,
        [(IMAGES, LABELS)],
        max_duration="1ba",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        algorithms=[SHIPPED[name]() for name in names],
        callbacks=[seen],
        seed=5,
    )
    return trainer, model, seen


PAIRS = list(itertools.product(SHIPPED, repeat=2))


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_a_pair_trains_on_one_distribution_smoothed_once_or_is_refused_naming_both(first, second):
    if refused(first, second):
        with pytest.raises(CompositionError) as error:
            build([first, second])
        message = str(error.value)
        if first == second:
            assert f"{first} #1" in message
            assert f"{first} #2" in message
        else:
            assert first in message
            assert second in message
        return

    trainer, model, seen = build([first, second])
    metrics = trainer.fit()
    targets = seen.targets
    if targets.is_floating_point():
        assert (targets >= 0).all()
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(8))
        # Label smoothing spreads its share over the 4 classes; online label smoothing's
        # first epoch puts (1 - alpha) of it on the 3 other classes of each label.
        floor = {
            "LabelSmoothing": SMOOTHING / 4,
            "OnlineLabelSmoothing": (1 - OLS_ALPHA) * SMOOTHING / 3,
        }
        expected_floor = next((floor[name] for name in (first, second) if name in floor), 0.0)
        # Mixing two labels of four leaves two classes with only the smoothing's share:
        # smoothed twice, it would be more.
        torch.testing.assert_close(targets.min(dim=1).values, torch.full((8,), expected_floor))
        loss = soft_cross_entropy(seen.outputs, targets)
    else:
        assert targets is LABELS
        loss = cross_entropy(seen.outputs, targets)
    if "Distillation" in (first, second):
        with torch.no_grad():
            teacher_logits = teacher()(model.seen[0])  # the inputs the student saw
        loss = distillation_loss(seen.outputs, teacher_logits, loss, TEMPERATURE, KD_ALPHA)
    # The training loss recorded is the loss optimised.
    assert metrics["train/loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_the_schedule_shows_who_changes_what_in_order_and_the_composition():
    trainer, _, _ = build(["OnlineLabelSmoothing", "MixUp", "Distillation"])
    schedule = trainer.schedule()
    assert "What the algorithms read and change, in the order it happens:" in schedule
    lines = schedule.splitlines()
    after_forward = next(line for line in lines if "Distillation reads inputs" in line)
    assert after_forward.index("Distillation reads inputs") < after_forward.index(
        "MixUp restores inputs"
    )
    assert (
        "targets at before_loss: OnlineLabelSmoothing smooths, then MixUp mixes; "
        "order-sensitive: OnlineLabelSmoothing reads the targets as the batch holds them, "
        "so it must stay listed before MixUp."
    ) in schedule
    assert (
        "Distillation reads the inputs at after_forward as the model's forward gets them, "
        "changed by MixUp: it must stay listed after MixUp."
    ) in schedule
