from collections.abc import Sequence
from typing import Literal, TextIO

import pytest

from loom.config.schema import ConfigError, coerce, parameters_of, resolve_arguments
from loom.trainer import Duration


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        ("1e-3", float, 0.001),  # YAML reads 1e-3 as a string
        (3, float, 3.0),
        ("1e4", int, 10000),
        (2.0, int, 2),
        (True, bool, True),
        ("b", Literal["a", "b"], "b"),
        (None, float | None, None),
        ("0.5", float | None, 0.5),
        (1, int | str, 1),
        ("1", int | str, "1"),  # a value that already has one of the types keeps it
        (["1", 2], Sequence[float], [1.0, 2.0]),
        ((1, 2), tuple[int, ...], [1, 2]),
        ("10ep", str | Duration, "10ep"),
    ],
)
def test_coerce_converts_what_a_job_file_means(value, annotation, expected):
    result = coerce(value, annotation, "key")
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "annotation", "message"),
    [
        ("fast", float, r"a\.b: expected float, got 'fast' \(str\)\."),
        (True, int, r"a\.b: expected int, got True \(bool\)"),
        (0.5, int, r"expected int, got 0\.5"),
        ("yes", bool, r"expected bool, got 'yes'"),
        (1, str, r"expected str, got 1 \(int\)"),
        ("c", Literal["a", "b"], r"expected 'a' \| 'b', got 'c'"),
        ([1, "x"], Sequence[int], r"a\.b\[1\]: expected int, got 'x'"),
        ("3 epochs", str | Duration, r"expected duration \('10ep', '500ba' or '20000sp'\)"),
        ({"x": 1}, float, r"expected float, got \{'x': 1\} \(dict\)"),
    ],
)
def test_coerce_refuses_with_path_type_and_value(value, annotation, message):
    with pytest.raises(ConfigError, match=message):
        coerce(value, annotation, "a.b")


def component(
    items: int,
    rate: float = 0.1,
    names: Sequence[str] = ("a",),
    stream: TextIO | None = None,
    *args: int,
    **kwargs: int,
):
    """A component for the tests."""


def test_parameters_are_the_plain_typed_keyword_arguments():
    described = [parameter.describe() for parameter in parameters_of(component)]
    # `stream` has no plain-data form; *args and **kwargs are no keys
    assert described == ["items: int", "rate: float = 0.1", "names: list[str] = ['a']"]
    assert [p.name for p in parameters_of(component, skip={"items"})] == ["rate", "names"]


def test_a_required_argument_without_a_plain_type_cannot_be_registered():
    def needs_stream(stream: TextIO): ...

    with pytest.raises(TypeError, match=r"required argument 'stream' has no plain-data type"):
        parameters_of(needs_stream)


def test_resolve_coerces_and_fills_defaults():
    resolved = resolve_arguments(component, {"items": "4"}, "model")
    assert resolved == {"items": 4, "rate": 0.1, "names": ["a"]}


def test_resolve_names_unknown_keys_with_a_suggestion():
    with pytest.raises(
        ConfigError,
        match=r"^model\.rte: unknown key \(did you mean 'rate'\?\); component takes items, rate, "
        r"names\.$",
    ):
        resolve_arguments(component, {"items": 1, "rte": 0.2}, "model")
    with pytest.raises(ConfigError, match=r"model\.stream: unknown key"):
        resolve_arguments(component, {"items": 1, "stream": None}, "model")


def test_resolve_names_a_missing_required_argument():
    with pytest.raises(
        ConfigError, match=r"^model\.items: missing required argument \(items: int\) of component"
    ):
        resolve_arguments(component, {}, "model")


def test_supplied_arguments_stay_out_unless_given():
    assert "items" not in resolve_arguments(component, {}, "m", supplied={"items"})
    # a supplied argument with a default is left to the builder, not defaulted
    assert "rate" not in resolve_arguments(component, {"items": 1}, "m", supplied={"rate"})
    assert resolve_arguments(component, {"items": 2}, "m", supplied={"items"})["items"] == 2
