from loom import Event

REQUIRED = [
    "init", "fit_start", "epoch_start", "batch_start", "before_forward", "after_forward",
    "before_loss", "after_loss", "before_backward", "after_backward", "batch_end", "epoch_end",
    "eval_start", "eval_batch_start", "eval_before_forward", "eval_after_forward",
    "eval_batch_end", "eval_end", "fit_end",
]  # fmt: skip


def test_event_values_are_the_hook_names():
    assert [event.value for event in Event] == REQUIRED
    for event in Event:
        assert event.value == event.name.lower()
        assert Event(event.value) is event


def test_reverse_order_events_are_exactly_after_and_end_events():
    reversed_events = {event.value for event in Event if event.runs_in_reverse}
    assert reversed_events == {
        "after_forward", "after_loss", "after_backward", "batch_end", "epoch_end",
        "eval_after_forward", "eval_batch_end", "eval_end", "fit_end",
    }  # fmt: skip


def test_docstring_places_every_event_in_the_loop():
    loop = Event.__doc__.split("::", 1)[1]
    words = [line.split()[0] for line in loop.splitlines() if line.strip()]
    placed = [word for word in words if word in Event.__members__]
    assert placed == [event.name for event in Event], (
        "the pseudocode lists each event once, in order"
    )
