import random

import pytest
import torch

from loom import Trainer
from loom.algorithms import CutMix, MixUp, MixUpOrCutMix
from loom.trainer import CompositionError, get_batch_item
from tests.algorithms.test_cutmix import IMAGES, LABELS, run


def test_each_mixed_batch_gets_one_of_the_two_as_it_would_alone():
    batches = [(IMAGES, LABELS)] * 60
    switch = MixUpOrCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.5)
    choices = []

    class Record(MixUpOrCutMix):
        def before_forward(self, state):
            super().before_forward(state)
            choices.append(self.last)

    switched = Record(mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.5)
    model, _, _ = run([switched], batches, duration="60ba")
    assert 15 < choices.count("cutmix") < 45
    assert choices.count("mixup") == 60 - choices.count("cutmix")
    # Replay the draws: after the switch's own draw, each batch is mixed by the same
    # code, with the same draws, as MixUp or CutMix alone.
    random.seed(3)
    torch.manual_seed(3)
    mixup, cutmix = MixUp(0.4), CutMix(1.0)
    for seen, choice in zip(model.seen, choices, strict=True):
        assert (random.random() < 0.5) == (choice == "cutmix")
        expected, _, _ = (cutmix if choice == "cutmix" else mixup).mix_inputs(IMAGES)
        torch.testing.assert_close(seen, expected)
    assert repr(switch) == "MixUpOrCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.5)"


@pytest.mark.parametrize(("switch_prob", "alone"), [(0.0, MixUp(0.4)), (1.0, CutMix(1.0))])
def test_a_certain_switch_is_the_run_of_the_one_it_picks_draw_for_draw(switch_prob, alone):
    batches = [(IMAGES, LABELS)] * 5
    switched, _, switched_metrics = run(
        [MixUpOrCutMix(0.4, 1.0, switch_prob=switch_prob)], batches, duration="5ba"
    )
    single, _, single_metrics = run([alone], batches, duration="5ba")
    for a, b in zip(switched.seen, single.seen, strict=True):
        assert torch.equal(a, b)
    assert switched_metrics == single_metrics


def test_inputs_that_are_not_images_are_refused_unless_cutmix_is_never_picked():
    features = [(torch.randn(8, 5), LABELS)]

    def fit(switch_prob):
        model = torch.nn.Linear(5, 4)
        algorithm = MixUpOrCutMix(switch_prob=switch_prob, prob=0.5)
        Trainer(
            model,
            features * 4,
            max_duration="4ba",
            device="cpu",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            algorithms=[algorithm],
            seed=0,
        ).fit()
        return algorithm

    with pytest.raises(
        ValueError,
        match=r"^MixUpOrCutMix cuts boxes out of images \(N, C, H, W\), but the inputs at "
        r"the run's input_key are float32 \(8, 5\) on cpu; switch_prob=0 is MixUp alone",
    ):
        fit(0.1)
    assert fit(0.0).last in (None, "mixup")  # MixUp alone mixes any floating inputs


def test_a_target_per_pixel_is_refused_at_the_first_batch_unless_cutmix_is_never_picked():
    segmentation = [(IMAGES, torch.randint(0, 3, (8, 5, 6)))]

    def fit(switch_prob):
        model = torch.nn.Conv2d(2, 3, kernel_size=1)
        trainer = Trainer(
            model,
            segmentation * 4,
            max_duration="4ba",
            device="cpu",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            algorithms=[MixUpOrCutMix(switch_prob=switch_prob, prob=0.5)],
            seed=0,
        )
        trainer.fit()
        return trainer

    with pytest.raises(
        ValueError,
        match=r"^MixUpOrCutMix mixes one target per image.*"
        r"switch_prob=0 is MixUp alone, which mixes them\.",
    ) as error:
        fit(0.1)
    assert "at event 'before_loss'" in str(error.value.__notes__)
    assert fit(0.0).state.timestamp.batch == 4


def test_last_says_neither_for_a_batch_left_unmixed():
    class Record(MixUpOrCutMix):
        def after_loss(self, state):
            super().after_loss(state)
            seen.append((self.last, get_batch_item(state.batch, 1) is LABELS))

    seen = []
    run([Record(prob=0.5)], [(IMAGES, LABELS)] * 40, duration="40ba")
    assert {last for last, _ in seen} == {None, "mixup", "cutmix"}
    assert all(restored for _, restored in seen)


def test_mixup_and_cutmix_side_by_side_are_refused_pointing_at_the_switch():
    with pytest.raises(
        CompositionError,
        match=r"^MixUp and CutMix both mix the inputs \(at before_forward\): the inputs would "
        r"be mixed twice\. To train with both MixUp and CutMix, MixUpOrCutMix picks one",
    ):
        run([MixUp(0.2), CutMix(1.0)])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"switch_prob": 2}, r"MixUpOrCutMix: switch_prob=2 must lie in \[0, 1\]"),
        ({"mixup_alpha": 0}, r"MixUpOrCutMix: mixup_alpha=0 must be a positive, finite number"),
        ({"cutmix_alpha": -1}, r"MixUpOrCutMix: cutmix_alpha=-1 must be a positive, finite number"),
        ({"prob": "half"}, r"MixUpOrCutMix: prob='half' must be a number in \[0, 1\]"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises((TypeError, ValueError), match=message):
        MixUpOrCutMix(**arguments)
