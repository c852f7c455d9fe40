import pytest

from loom.trainer import Duration, Timestamp, TimeUnit


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
