import pytest

from loom.trainer import Algorithm, CompositionError, Engine, changes, composition, reads, restores
from loom.trainer.effects import simulate


def algorithm(name, *effects):
    """An Algorithm class called ``name`` with a hook at every event its effects name."""
    hooks = {effect.at: lambda self, state: None for effect in effects}
    return type(name, (Algorithm,), {"effects": tuple(effects), **hooks})


Scale = algorithm(
    "Scale",
    changes("inputs", at="before_forward", how="scales"),
    restores("inputs", at="after_forward"),
)
Shift = algorithm(
    "Shift",
    changes("inputs", at="before_forward", how="shifts"),
    restores("inputs", at="after_forward"),
)
Peek = algorithm("Peek", reads("inputs", at="after_forward", needs="as_used"))
EarlyPeek = algorithm("EarlyPeek", reads("inputs", at="before_forward", needs="as_used"))
NewLoss = algorithm("NewLoss", changes("loss", at="after_loss", how="replaces"))
OtherLoss = algorithm("OtherLoss", changes("loss", at="before_backward", how="replaces"))


def test_changes_of_a_kind_of_your_own_are_allowed_and_reported_order_sensitive():
    (note,) = composition([Scale, Shift])
    assert note == (
        "inputs at before_forward: Scale scales, then Shift shifts; order-sensitive: they "
        "run in this order."
    )


def test_a_reader_of_what_the_loop_uses_must_see_the_same_changes():
    # At after_forward the algorithms run in reverse: listed after Scale, Peek reads
    # before Scale restores; listed before, after.
    assert composition([Scale, Peek]) == [
        "Peek reads the inputs at after_forward as the model's forward gets them, changed "
        "by Scale: it must stay listed after Scale."
    ]
    with pytest.raises(
        CompositionError,
        match=r"^Peek reads the inputs at after_forward to see them as the model's forward "
        r"gets them, but would not see Scale's change, which the model's forward does\. "
        r"List Peek after Scale\.$",
    ):
        composition([Peek, Scale])
    with pytest.raises(CompositionError, match=r"^EarlyPeek .* List EarlyPeek after Scale\.$"):
        composition([EarlyPeek, Scale])
    assert composition([Scale, EarlyPeek])  # sees the change, as the forward does


def test_a_reader_that_sees_a_change_the_loop_does_not_is_told_to_move_first():
    late = algorithm(
        "Late",
        changes("inputs", at="after_forward", how="scales"),
        restores("inputs", at="after_loss"),
    )
    with pytest.raises(CompositionError, match=r"would see Late's change, which the model's "):
        composition([Peek, late])  # at after_forward: Late changes, then Peek reads


def test_two_replacements_of_the_loss_are_refused_at_any_two_events():
    with pytest.raises(
        CompositionError,
        match=r"^NewLoss \(at after_loss\) and OtherLoss \(at before_backward\) both replace "
        r"the loss: the loss would be replaced twice\.$",
    ):
        Engine(algorithms=[NewLoss(), OtherLoss()])


def test_a_change_restored_does_not_count_against_the_next_step_of_a_later_plugin():
    # Two plugins mixing at different moments, the first restored before the second.
    before = algorithm(
        "Before",
        changes("targets", at="batch_start", how="mixes"),
        restores("targets", at="before_forward"),
    )
    after = algorithm(
        "After",
        changes("targets", at="before_loss", how="mixes"),
        restores("targets", at="after_loss"),
    )
    assert composition([before, after]) == []


@pytest.mark.parametrize(
    ("declare", "error", "message"),
    [
        (lambda: changes("weights", at="init", how="x"), ValueError, "subject must be one of"),
        (lambda: changes("inputs", at="init", how=""), ValueError, r"say how inputs is changed"),
        (lambda: reads("inputs", at="init", needs="fresh"), ValueError, r"not 'fresh'"),
        (lambda: reads("model", at="init", needs="as_used"), ValueError, r"not 'model'"),
    ],
)
def test_a_malformed_effect_is_refused_when_declared(declare, error, message):
    with pytest.raises(error, match=message):
        declare()


def test_effects_must_be_at_an_event_the_plugin_hooks():
    class NoHook(Algorithm):
        effects = (changes("targets", at="before_loss", how="smooths"),)

    class Misspelt(Algorithm):
        effects = (changes("targets", at="before_los", how="smooths"),)

        def before_loss(self, state):
            pass

    class NotEffects(Algorithm):
        effects = ("changes targets",)

    with pytest.raises(TypeError, match=r"changes targets \(smooths\) at before_loss, but has no"):
        Engine(algorithms=[NoHook()])
    with pytest.raises(TypeError, match=r"'before_los', which is not an event; did you mean"):
        Engine(algorithms=[Misspelt()])
    with pytest.raises(TypeError, match=r"must be a tuple of effects made with loom\.trainer"):
        Engine(algorithms=[NotEffects()])


def test_a_restore_without_a_change_is_a_declaration_error():
    with pytest.raises(CompositionError, match=r"restores the targets at after_loss, but no"):
        simulate([("after_loss", [("Odd", [restores("targets", at="after_loss")])])])


def test_plugins_that_declare_nothing_are_not_checked():
    class Quiet(Algorithm):
        def before_loss(self, state):
            pass

    assert composition([Quiet, Quiet]) == []


def test_in_a_longer_list_the_advice_names_the_pair_at_fault_and_either_order_only_if_true():
    from loom.algorithms import Distillation, LabelSmoothing, MixUp, OnlineLabelSmoothing

    # OLS after MixUp: moving OLS first is legal, whatever else the list holds.
    for algorithms in (
        [MixUp, OnlineLabelSmoothing, LabelSmoothing],
        [Distillation, MixUp, OnlineLabelSmoothing],
    ):
        with pytest.raises(CompositionError) as error:
            composition(algorithms)
        assert str(error.value).startswith("OnlineLabelSmoothing reads the targets")
        assert "either order" not in str(error.value)
    assert composition([OnlineLabelSmoothing, MixUp, Distillation])
    # One class twice: the rule two may not break, not an order that does not help.
    with pytest.raises(
        CompositionError,
        match=r"^OnlineLabelSmoothing #1 and OnlineLabelSmoothing #2 both smooth the targets "
        r"\(at before_loss\): the targets would be smoothed twice\.$",
    ):
        composition([OnlineLabelSmoothing, OnlineLabelSmoothing])
    with pytest.raises(CompositionError, match=r"^Distillation #1 and Distillation #2 both"):
        composition([Distillation, Distillation])  # named as listed, at an after_ event too


def test_either_order_is_said_when_the_other_order_fails_on_the_same_pair():
    def relabeller(name):  # reads the labels unchanged, then changes them its own way
        return algorithm(
            name,
            reads("targets", at="before_loss", needs="original"),
            changes("targets", at="before_loss", how="relabels"),
            restores("targets", at="after_loss"),
        )

    first, second = relabeller("First"), relabeller("Second")
    with pytest.raises(
        CompositionError,
        match=r"^First and Second cannot be combined in either order\. As listed: Second "
        r"reads the targets .* \(relabels, at before_loss\)\. Listed the other way round: "
        r"First reads the targets .* \(relabels, at before_loss\)\.$",
    ):
        composition([first, second])


def test_advice_at_a_reversed_event_names_the_order_that_works():
    # At after_loss the algorithms run in reverse: to see the loss the backward gets, a
    # reader there must be listed *before* the plugin that replaces it.
    from loom.algorithms import Distillation

    log = algorithm("LossLog", reads("loss", at="after_loss", needs="as_used"))
    with pytest.raises(CompositionError, match=r"List LossLog before Distillation\.$"):
        composition([Distillation, log])
    assert composition([log, Distillation]) == [
        "LossLog reads the loss at after_loss as the backward gets them, changed by "
        "Distillation: it must stay listed before Distillation."
    ]
    late = algorithm(
        "Late",
        changes("inputs", at="after_forward", how="scales"),
        restores("inputs", at="after_loss"),
    )
    with pytest.raises(CompositionError, match=r"List Peek after Late\.$"):
        composition([Peek, late])
    assert composition([late, Peek]) == []


def test_a_read_of_what_the_plugin_itself_still_holds_changed_is_a_declaration_error():
    muddled = algorithm(
        "Muddled",
        changes("targets", at="before_loss", how="relabels"),
        reads("targets", at="after_loss", needs="original"),
        restores("targets", at="after_backward"),
    )
    with pytest.raises(
        CompositionError, match=r"^Muddled declares .* its own change .* declare the restore"
    ):
        composition([muddled])
