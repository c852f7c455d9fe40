import pytest

from loom.trainer import Algorithm, Callback, Engine, Event, fire

REQUIRED = [
    "init", "fit_start", "epoch_start", "batch_start", "before_forward", "after_forward",
    "before_loss", "after_loss", "before_backward", "after_backward", "before_optimizer_step",
    "batch_end", "epoch_end",
    "eval_start", "eval_batch_start", "eval_before_forward", "eval_after_forward",
    "eval_batch_end", "eval_end", "fit_end",
]  # fmt: skip


def test_event_values_are_the_hook_names():
    assert [event.value for event in Event] == REQUIRED
    for event in Event:
        assert event.value == event.name.lower()
        assert Event(event.value) is event


def test_the_events_that_close_a_pair_are_exactly_after_and_end_events():
    reversed_events = {event.value for event in Event if event.closes_pair}
    assert reversed_events == {
        "after_forward", "after_loss", "after_backward", "batch_end", "epoch_end",
        "eval_after_forward", "eval_batch_end", "eval_end", "fit_end",
    }  # fmt: skip


def test_docstring_places_every_event_in_the_loop_at_its_depth():
    loop = Event.__doc__.split("::", 1)[1]
    lines = [line for line in loop.splitlines() if line.strip()]
    margin = len(lines[0]) - len(lines[0].lstrip())
    placed = [
        (line.split()[0], (len(line) - len(line.lstrip()) - margin) // 4)
        for line in lines
        if line.split()[0] in Event.__members__
    ]
    assert placed == [(event.name, event.depth) for event in Event], (
        "the pseudocode lists each event once, in order, nested as Event.depth says"
    )


class Recorder:
    """Appends (name, event) to a shared log at every event."""

    def __init__(self, name, log):
        self.name, self.log = name, log
        for event in Event:
            setattr(self, event.value, self._recorder(event.value))

    def _recorder(self, event_name):
        return lambda state: self.log.append((self.name, event_name))


class RecordingAlgorithm(Recorder, Algorithm):
    pass


class RecordingCallback(Recorder, Callback):
    pass


def test_algorithms_run_first_and_unwind_in_reverse_while_callbacks_keep_their_order():
    log = []
    engine = Engine(
        algorithms=[RecordingAlgorithm("A1", log), RecordingAlgorithm("A2", log)],
        callbacks=[RecordingCallback("C1", log), RecordingCallback("C2", log)],
    )
    for event in Event:
        log.clear()
        fire(engine.hooks[event], state=None)
        names = [name for name, _ in log]
        if event.closes_pair:
            assert names == ["A2", "A1", "C1", "C2"], event
        else:
            assert names == ["A1", "A2", "C1", "C2"], event


def test_an_event_nobody_handles_has_no_hooks():
    class OnlyLoss(Algorithm):
        def before_loss(self, state):
            pass

    engine = Engine(algorithms=[OnlyLoss()])
    assert engine.hooks[Event.BEFORE_LOSS][0][1] == "before_loss"
    assert all(engine.hooks[event] == () for event in Event if event is not Event.BEFORE_LOSS)


def test_an_error_in_a_plugin_keeps_its_type_and_names_plugin_and_event():
    class Broken(Algorithm):
        def after_loss(self, state):
            raise KeyError("targets")

    engine = Engine(algorithms=[Broken()])
    with pytest.raises(KeyError) as raised:
        fire(engine.hooks.after_loss, state=None)
    assert raised.value.__notes__ == ["raised by algorithm Broken at event 'after_loss'"]


def test_schedule_shows_each_event_and_its_plugins_in_run_order():
    class Smooth(Algorithm):
        def before_loss(self, state):
            pass

        def after_loss(self, state):
            pass

    class Mix(Algorithm):
        def before_loss(self, state):
            pass

        def after_loss(self, state):
            pass

    class Log(Callback):
        def epoch_end(self, state):
            pass

    schedule = Engine(algorithms=[Smooth(), Mix()], callbacks=[Log()]).schedule().splitlines()
    lines = schedule[: len(Event)]
    assert [line.split()[0] for line in lines] == [event.value for event in Event]
    by_event = {line.split()[0]: line.split(maxsplit=1)[1:] for line in lines}
    assert by_event["before_loss"] == ["Smooth, Mix"]
    assert by_event["after_loss"] == ["Mix, Smooth"]
    assert by_event["epoch_end"] == ["Log"]
    assert by_event["batch_start"] == []
    assert "    batch_start" in lines[3], "nesting is shown by indentation"


def test_plugins_of_the_wrong_kind_are_refused_with_a_hint():
    class Log(Callback):
        pass

    with pytest.raises(
        TypeError,
        match=r"algorithms\[0\] must be an instance of loom.Algorithm.*pass it in callbacks=",
    ):
        Engine(algorithms=[Log()])
    with pytest.raises(
        TypeError, match=r"callbacks\[0\].*pass an instance, Log\(...\), not the class"
    ):
        Engine(callbacks=[Log])
    with pytest.raises(TypeError, match=r"wrap a single one in a list"):
        Engine(callbacks=Log())
    with pytest.raises(TypeError, match=r"in the order they should run"):
        Engine(callbacks={Log()})


def test_the_same_plugin_object_twice_is_refused():
    class Log(Callback):
        pass

    log = Log()
    with pytest.raises(ValueError, match=r"callback Log is registered twice"):
        Engine(callbacks=[log, log])


def test_a_misspelled_hook_is_reported():
    class Typo(Algorithm):
        def before_los(self, state):
            pass

    with pytest.warns(
        UserWarning, match=r"Typo.before_los is not an event hook .* did you mean 'before_loss'"
    ):
        Engine(algorithms=[Typo()])


def test_a_hook_that_is_not_callable_is_refused():
    class NotAMethod(Callback):
        fit_end = 3

    with pytest.raises(TypeError, match=r"callback NotAMethod.fit_end is int, not a method"):
        Engine(callbacks=[NotAMethod()])


class Saves(Callback):
    writes = ("checkpoint_path",)


class Summarises(Callback):
    reads = ("checkpoint_path", "metrics")


class Scores(Callback):
    writes = ("metrics",)


def test_a_reader_listed_after_its_writer_is_shown_in_the_schedule():
    schedule = Engine(callbacks=[Saves(), Scores(), Summarises()]).schedule()
    assert "state.checkpoint_path: written by Saves; read by Summarises" in schedule
    assert "state.metrics: written by Scores; read by Summarises" in schedule
    assert "callbacks run in the order given at every event" in schedule


def test_a_reader_listed_before_its_writer_is_refused_naming_both():
    with pytest.raises(
        ValueError,
        match=r"callback Summarises reads state.checkpoint_path, which callback Saves writes "
        r"after it has run; list Saves before Summarises",
    ):
        Engine(callbacks=[Summarises(), Saves()])


def test_an_algorithm_cannot_read_what_a_callback_writes():
    class ReadsMetrics(Algorithm):
        reads = ("metrics",)

    with pytest.raises(
        ValueError,
        match=r"algorithm ReadsMetrics reads state.metrics.*"
        r"algorithms run before callbacks",
    ):
        Engine(algorithms=[ReadsMetrics()], callbacks=[Scores()])


@pytest.mark.parametrize("declared", [("checkpoint",), "metrics"], ids=["unknown", "a str"])
def test_declared_fields_must_be_state_fields(declared):
    class Declares(Callback):
        writes = declared

    named = declared if isinstance(declared, str) else declared[0]
    with pytest.raises(
        TypeError,
        match=r"callback Declares.writes = .* must be a tuple of State field names, e.g. "
        rf"\('metrics',\); '{named}' is not one",
    ):
        Engine(callbacks=[Declares()])


def test_an_artifact_labels_every_dimension():
    import torch

    from loom.trainer import Artifact

    with pytest.raises(ValueError, match=r"artifact 'm' has 2 dimensions but 1 axis labels"):
        Artifact(torch.zeros(2, 2), title="m", axes=("rows",))
