import pytest

from loom.trainer import Algorithm, Callback, Engine, Event


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


def test_algorithms_run_before_callbacks_and_unwind_in_reverse_at_after_and_end_events():
    log = []
    engine = Engine(
        algorithms=[RecordingAlgorithm("A1", log), RecordingAlgorithm("A2", log)],
        callbacks=[RecordingCallback("C1", log), RecordingCallback("C2", log)],
    )
    for event in Event:
        log.clear()
        engine.run(event, state=None)
        names = [name for name, _ in log]
        if event.runs_in_reverse:
            assert names == ["A2", "A1", "C2", "C1"], event
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
        engine.run(Event.AFTER_LOSS, state=None)
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

    lines = Engine(algorithms=[Smooth(), Mix()], callbacks=[Log()]).schedule().splitlines()
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
