import pytest
import torch

from loom.trainer import Duration, State, Timestamp, TimeUnit


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("10ep", 10, TimeUnit.EPOCH),
        ("500ba", 500, TimeUnit.BATCH),
        ("20000sp", 20000, TimeUnit.SAMPLE),
    ],
)
def test_parse_accepts_each_unit(text, value, unit):
    duration = Duration.parse(text)
    assert (duration.value, duration.unit) == (value, unit)
    assert str(duration) == text


@pytest.mark.parametrize(
    "text", ["-1ba", "1.5ep", "10", "ep", "0ep", "10 ep", "10EP", "", 10, None]
)
def test_parse_rejects_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"max_duration=.*'10ep' \(epochs\), '500ba' \(batches\)"):
        Duration.parse(text, name="max_duration")


def test_parse_returns_a_duration_unchanged():
    duration = Duration(3, TimeUnit.EPOCH)
    assert Duration.parse(duration) is duration


def test_timestamp_reached_counts_in_the_duration_unit():
    timestamp = Timestamp(epoch=1, batch=40, samples=1280)
    assert timestamp.reached(Duration.parse("1ep"))
    assert not timestamp.reached(Duration.parse("2ep"))
    assert timestamp.reached(Duration.parse("40ba"))
    assert not timestamp.reached(Duration.parse("1281sp"))


def test_timestamp_state_dict_round_trip():
    timestamp = Timestamp(epoch=2, batch=17, batch_in_epoch=3, samples=544)
    restored = Timestamp()
    restored.load_state_dict(timestamp.state_dict())
    assert restored == timestamp


def make_state(batch, **keys):
    return State(
        model=torch.nn.Identity(),
        optimizers=[],
        schedulers=[],
        max_duration=Duration.parse("1ep"),
        train_dataloader=[],
        eval_dataloader=None,
        device=torch.device("cpu"),
        precision="fp32",
        batch=batch,
        **keys,
    )


def test_inputs_and_targets_are_read_and_replaced_at_the_runs_keys():
    batch = {"image": torch.zeros(2, 3), "label": torch.tensor([0, 1])}
    state = make_state(batch, input_key="image", target_key="label")
    assert state.get_inputs() is batch["image"]
    assert state.get_targets() is batch["label"]
    state.set_targets(torch.tensor([1, 1]))
    state.set_inputs(torch.ones(2, 3))
    assert state.batch["label"].tolist() == [1, 1]
    assert state.batch["image"].sum() == 6
    assert batch["label"].tolist() == [0, 1], "the dataloader's batch is never changed"


def test_a_key_given_to_the_accessor_overrides_the_runs():
    state = make_state((torch.zeros(2), torch.tensor([3, 4]), torch.tensor([5, 6])))
    assert state.get_targets().tolist() == [3, 4]
    assert state.get_targets(2).tolist() == [5, 6]
    state.set_targets(torch.tensor([0, 0]), 2)
    assert state.batch[1].tolist() == [3, 4]
    assert state.batch[2].tolist() == [0, 0]


def test_a_missing_key_names_the_key_and_what_the_batch_has():
    state = make_state({"image": torch.zeros(1), "label": torch.zeros(1)}, target_key="labels")
    with pytest.raises(
        KeyError,
        match=r"batch key 'labels' is not in the dict batch; its keys "
        r"are \['image', 'label'\]",
    ):
        state.get_targets()
