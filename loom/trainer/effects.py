"""What an algorithm declares it reads and changes, and the check of a list of them.

An algorithm states its effects as plain class data::

    class MixUp(Algorithm):
        effects = (
            changes("inputs", at="before_forward", how="mixes"),
            restores("inputs", at="after_forward"),
            changes("targets", at="before_loss", how="mixes"),
            restores("targets", at="after_loss"),
        )

From the effects of every algorithm of a run, in the order each event runs them,
:func:`simulate` plays one training step through before anything trains: who has
changed what at each moment, and whether each reader sees what it needs. A list that
cannot be right (the targets smoothed twice, two plugins that each replace the loss,
a reader of class indices after someone made them dense) is refused with both
plugins named; one that is legal but order-sensitive is allowed, and its effective
order is among the notes ``trainer.schedule()`` prints.

Effects are what the plugin promises, not what is enforced at run time: a plugin
that declares none is not checked at all (the default, for plugins of your own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = [
    "EXCLUSIVE",
    "LOOP_USES",
    "SUBJECTS",
    "CompositionError",
    "Effect",
    "Timeline",
    "changes",
    "reads",
    "restores",
    "simulate",
]

SUBJECTS = ("inputs", "outputs", "targets", "loss", "model", "optimizer_step", "result")
"""What an effect can be about: the batch's inputs and targets, the model's outputs,
the loss, the model itself, the optimizer step, and the run's result (the weights its
evaluations report and it exports, ``state.eval_model`` and ``state.export_model``)."""

EXCLUSIVE = {
    "smooths": ("smooth", "would be smoothed twice"),
    "mixes": ("mix", "would be mixed twice"),
    "replaces": ("replace", "would be replaced twice"),
}
"""Changes that two plugins may not both make to one subject: the verb, and why not."""

COMMUTING = frozenset({"smooths", "mixes"})
"""Changes of the targets that give the same result in either order: smoothing and
mixing are both convex combinations, linear in the one-hot targets."""

LOOP_USES = {"before_forward": "inputs", "before_loss": "targets", "before_backward": "loss"}
"""The subject the loop itself uses right after each of these events' hooks: the
forward reads the inputs, the loss the targets, the backward the loss."""

USERS = {"inputs": "the model's forward", "targets": "the loss", "loss": "the backward"}
"""Who in the loop uses each subject that a read ``needs="as_used"`` can be about."""

_NEEDS = {
    "": "",
    "original": "as the batch holds them, unchanged",
    "as_used": "as {user} gets them",
}


class CompositionError(ValueError):
    """Algorithms whose declared effects cannot be combined in the order given.

    Attributes:
        plugins: The two the message names, as the timeline labels them.
        about_order: Whether it is about where one runs relative to the other, which
            another order may mend (:func:`loom.trainer.composition` tries the other
            order, and says which to use, or that neither does).
    """

    def __init__(self, message: str, plugins: tuple[str, ...] = (), about_order: bool = False):
        super().__init__(message)
        self.plugins = plugins
        self.about_order = about_order


@dataclasses.dataclass(frozen=True)
class Effect:
    """One thing an algorithm does at one event.

    Build one with :func:`reads`, :func:`changes` or :func:`restores`.

    Attributes:
        action: ``"reads"``, ``"changes"`` or ``"restores"``.
        subject: One of :data:`SUBJECTS`.
        at: The event (its hook's name) at which it happens.
        how: For a change, what kind (``"smooths"``, ``"mixes"``, ``"replaces"``, or
            words of your own, which are never refused but reported order-sensitive);
            for a read, what it needs: ``"original"`` (nobody has changed the subject
            by then), ``"as_used"`` (the subject as the loop uses it: the inputs as the
            forward saw them) or ``""`` (anything).
        hint: Said when the effect takes part in a refusal: how to get what was meant.
    """

    action: str
    subject: str
    at: str
    how: str = ""
    hint: str = ""

    def __post_init__(self) -> None:
        if self.action not in ("reads", "changes", "restores"):
            raise ValueError(
                f"an effect's action is 'reads', 'changes' or 'restores', not {self.action!r}."
            )
        if self.subject not in SUBJECTS:
            raise ValueError(
                f"an effect's subject must be one of {', '.join(SUBJECTS)}, not {self.subject!r}."
            )
        if not isinstance(self.at, str):
            raise TypeError(f"an effect's event must be a hook's name, got {self.at!r}.")
        if self.action == "reads" and self.how not in _NEEDS:
            raise ValueError(
                f"a read needs 'original', 'as_used' or nothing (''), not {self.how!r}."
            )
        if self.how == "as_used" and self.subject not in USERS:
            raise ValueError(
                f"needs='as_used' is about what the loop uses: {', '.join(USERS)}, not "
                f"{self.subject!r}."
            )
        if self.action == "changes" and not self.how:
            raise ValueError(
                f"say how {self.subject} is changed, e.g. how='smooths', 'mixes' or 'replaces'."
            )

    def describe(self) -> str:
        """The effect in words: ``"changes targets (mixes)"``."""
        if self.action == "restores":
            return f"restores {self.subject}"
        if self.action == "reads":
            need = _NEEDS[self.how].format(user=USERS.get(self.subject))
            return f"reads {self.subject}" + (f" ({need})" if need else "")
        return f"changes {self.subject} ({self.how})"


def reads(subject: str, at: str, needs: str = "", hint: str = "") -> Effect:
    """An algorithm reads ``subject`` at event ``at``, needing it ``"original"``,
    ``"as_used"`` or as it is (``""``).

    Examples:
        >>> reads("targets", at="before_loss", needs="original").describe()
        'reads targets (as the batch holds them, unchanged)'
    """
    return Effect("reads", subject, at, needs, hint)


def changes(subject: str, at: str, how: str, hint: str = "") -> Effect:
    """An algorithm changes ``subject`` at event ``at``; ``how`` says what kind of change.

    Examples:
        >>> changes("targets", at="before_loss", how="smooths").describe()
        'changes targets (smooths)'
    """
    return Effect("changes", subject, at, how, hint)


def restores(subject: str, at: str) -> Effect:
    """An algorithm puts back, at event ``at``, the ``subject`` it changed before.

    Examples:
        >>> restores("targets", at="after_loss").describe()
        'restores targets'
    """
    return Effect("restores", subject, at)


Timeline = Sequence[tuple[str, Sequence[tuple[str, Sequence[Effect]]]]]
"""One training step: each event's name, with the (plugin name, effects there) of the
plugins that act at it, in the order they run there."""


@dataclasses.dataclass
class _Change:
    plugin: str
    effect: Effect


@dataclasses.dataclass
class _Read:
    plugin: str
    effect: Effect
    seen: tuple[str, ...]  # who had changed the subject when it was read


def simulate(timeline: Timeline, order: Sequence[str] = ()) -> list[str]:
    """Plays the effects of one training step in order; returns the notes on what is
    order-sensitive or commutes, and raises :class:`CompositionError` on what cannot be.

    ``order``: the plugins' labels as listed, so that a message names two in that order
    (an event that closes a pair runs them in reverse).

    Examples:
        >>> smooth = [changes("targets", at="before_loss", how="smooths")]
        >>> simulate([("before_loss", [("LabelSmoothing", smooth), ("Other", smooth)])])
        Traceback (most recent call last):
        ...
        loom.trainer.effects.CompositionError: LabelSmoothing and Other both smooth the targets ...
    """
    active: dict[str, list[_Change]] = {subject: [] for subject in SUBJECTS}
    used: dict[str, tuple[str, ...]] = {}
    pending: list[_Read] = []
    notes: list[str] = []
    for event, acting in timeline:
        changed_here: dict[str, list[_Change]] = {}
        needs_original: dict[str, str] = {}  # subject: the plugin that reads it unchanged here
        for plugin, effects in acting:
            # What two plugins may not both do comes first: a plugin that smooths the
            # targets it reads unchanged, listed twice, smooths twice; where it reads
            # them is not the point.
            for effect in effects:
                if effect.action == "changes":
                    _refuse_a_second(active[effect.subject], plugin, effect, order)
            for effect in effects:
                subject = active[effect.subject]
                if effect.action == "changes":
                    change = _Change(plugin, effect)
                    subject.append(change)
                    changed_here.setdefault(effect.subject, []).append(change)
                elif effect.action == "restores":
                    _restore(subject, plugin, effect)
                else:
                    pending.append(_Read(plugin, effect, tuple(c.plugin for c in subject)))
                    if effect.how == "original":
                        if subject:
                            _refuse_a_late_reader(plugin, effect, subject[-1])
                        needs_original.setdefault(effect.subject, plugin)
        notes += [
            _order_note(subject, event, made, needs_original.get(subject), order)
            for subject, made in changed_here.items()
        ]
        if event in LOOP_USES:
            subject = LOOP_USES[event]
            used[subject] = tuple(change.plugin for change in active[subject])
    for read in pending:
        if read.effect.how == "as_used" and read.effect.subject in used:
            notes.append(_check_read_as_used(read, used[read.effect.subject], order))
    return [note for note in notes if note]


def _refuse_a_second(
    subject: list[_Change], plugin: str, effect: Effect, order: Sequence[str]
) -> None:
    if effect.how not in EXCLUSIVE:
        return  # a kind of change of the plugin's own: never refused
    for earlier in subject:
        if earlier.plugin == plugin or earlier.effect.how != effect.how:
            continue
        verb, why = EXCLUSIVE[effect.how]
        pair = [(earlier.plugin, earlier.effect.at), (plugin, effect.at)]
        if order and order.index(plugin) < order.index(earlier.plugin):
            pair.reverse()  # named as listed
        if pair[0][1] == pair[1][1]:
            named = (
                f"{pair[0][0]} and {pair[1][0]} both {verb} the {effect.subject} (at {effect.at})"
            )
        else:
            named = (
                f"{pair[0][0]} (at {pair[0][1]}) and {pair[1][0]} (at {pair[1][1]}) both {verb} "
                f"the {effect.subject}"
            )
        # A hint says how to have both: no help for one class listed twice.
        same_class = _class_of(plugin) == _class_of(earlier.plugin)
        hint = "" if same_class else (earlier.effect.hint or effect.hint)
        raise CompositionError(
            f"{named}: the {effect.subject} {why}." + (f" {hint}" if hint else ""),
            plugins=(pair[0][0], pair[1][0]),
        )


def _class_of(label: str) -> str:
    """``"MixUp"`` of ``"MixUp #2"``: the timeline numbers a class listed twice."""
    return label.split(" #", 1)[0]


def _restore(subject: list[_Change], plugin: str, effect: Effect) -> None:
    for position in range(len(subject) - 1, -1, -1):
        if subject[position].plugin == plugin:
            del subject[position]
            return
    raise CompositionError(
        f"{plugin} declares that it restores the {effect.subject} at {effect.at}, but no "
        f"change of the {effect.subject} of its own comes before; declare the change "
        "(changes(...)) at the event where it is made."
    )


def _refuse_a_late_reader(plugin: str, effect: Effect, changer: _Change) -> None:
    hint = f" {effect.hint}" if effect.hint else ""
    if changer.plugin == plugin:
        raise CompositionError(
            f"{plugin} declares that it reads the {effect.subject} at {effect.at} as the batch "
            f"holds them, but its own change of them ({changer.effect.how}, at "
            f"{changer.effect.at}) is still in place then; declare the restore before the read."
        )
    raise CompositionError(
        f"{plugin} reads the {effect.subject} at {effect.at} as the batch holds them, "
        f"but {changer.plugin} has changed them by then ({changer.effect.how}, at "
        f"{changer.effect.at}).{hint}",
        plugins=(plugin, changer.plugin),
        about_order=True,
    )


def _side(order: Sequence[str], plugin: str, others: Sequence[str]) -> str:
    """Where ``plugin`` is listed relative to ``others``: ``"before X"``, ``"after X"``."""
    if not order:
        return f"where it is relative to {', '.join(others)}"
    side = "after" if order.index(plugin) > order.index(others[0]) else "before"
    return f"{side} {', '.join(others)}"


def _order_note(
    subject: str, event: str, made: list[_Change], first: str | None, order: Sequence[str]
) -> str:
    """``first``: the plugin that reads ``subject`` unchanged at ``event``, so must run first."""
    if len({change.plugin for change in made}) < 2:
        return ""
    sequence = ", then ".join(f"{change.plugin} {change.effect.how}" for change in made)
    if first is not None:
        others = [change.plugin for change in made if change.plugin != first]
        return (
            f"{subject} at {event}: {sequence}; order-sensitive: {first} reads the "
            f"{subject} as the batch holds them, so it must stay listed "
            f"{_side(order, first, others)}."
        )
    if all(change.effect.how in COMMUTING for change in made) and subject == "targets":
        return (
            f"{subject} at {event}: {sequence}; these commute, so either order gives the "
            "same targets (where no position is ignored)."
        )
    return f"{subject} at {event}: {sequence}; order-sensitive: they run in this order."


def _check_read_as_used(read: _Read, used: tuple[str, ...], order: Sequence[str]) -> str:
    effect = read.effect
    user = USERS[effect.subject]
    if read.seen == used:
        changers = [plugin for plugin in used if plugin != read.plugin]
        if not changers:
            return ""
        return (
            f"{read.plugin} reads the {effect.subject} at {effect.at} as {user} gets them, "
            f"changed by {', '.join(changers)}: it must stay listed "
            f"{_side(order, read.plugin, changers)}."
        )
    missing = [plugin for plugin in used if plugin not in read.seen]
    extra = [plugin for plugin in read.seen if plugin not in used]
    if missing:
        other = missing[0]
        problem = f"would not see {other}'s change, which {user} does"
    else:
        other = extra[0]
        problem = f"would see {other}'s change, which {user} does not"
    raise CompositionError(
        f"{read.plugin} reads the {effect.subject} at {effect.at} to see them as {user} "
        f"gets them, but {problem}." + (f" {effect.hint}" if effect.hint else ""),
        plugins=(read.plugin, other),
        about_order=True,
    )
