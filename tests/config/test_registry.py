from pathlib import Path
from typing import TextIO

import pytest

import loom.algorithms
from loom.config import ALGORITHMS, REGISTRIES, ConfigError, Registry
from loom.trainer import Algorithm

ALGORITHM_FOLDERS = sorted(
    path.name
    for path in Path(loom.algorithms.__file__).parent.iterdir()
    if (path / "__init__.py").exists()
)


def test_every_algorithm_folder_is_registered_under_its_name():
    assert list(ALGORITHMS) == ALGORITHM_FOLDERS
    for name in ALGORITHM_FOLDERS:
        component = ALGORITHMS.get(name)
        assert issubclass(component, Algorithm)
        assert component.__module__.startswith(f"loom.algorithms.{name}.")
        assert (Path(loom.algorithms.__file__).parent / name / "README.md").exists(), (
            f"{name} has a method card"
        )


def test_every_registered_component_has_a_summary_and_a_schema():
    for kind, registry in REGISTRIES.items():
        assert registry.kind == kind
        for name in registry:
            assert registry.summary(name), f"{kind} {name} has a docstring"
            registry.parameters(name)  # a schema a job file can fill


def test_unknown_names_suggest_the_closest():
    with pytest.raises(
        ConfigError,
        match=r"^algorithms\.0\.name: unknown algorithm 'label_smothing' "
        r"\(did you mean 'label_smoothing'\?\); known: channels_last, cutmix, distillation, ema, "
        r"label_smoothing, mixup, mixup_or_cutmix, online_label_smoothing, sam, "
        r"stochastic_depth, swa\.$",
    ):
        ALGORITHMS.get("label_smothing", "algorithms.0.name")
    with pytest.raises(
        ConfigError, match=r"^unknown algorithm 'zzz'; known: channels_last, cutmix"
    ):
        ALGORITHMS.get("zzz")


def first(size: int = 1): ...


def second(size: int = 2): ...


def test_a_name_is_registered_once():
    registry = Registry("callback", {"a": first})
    registry.register("a", first)  # the same component again is fine
    with pytest.raises(ValueError, match=r"callback name 'a' is already registered"):
        registry.register("a", second)
    for bad in ("not valid", "Upper"):
        with pytest.raises(ValueError, match=r"must be a lowercase identifier"):
            registry.register(bad, second)


def test_register_as_a_decorator_and_refuse_unconfigurable_components():
    registry = Registry("model")

    @registry.register("mine")
    def mine(width: int = 3): ...

    assert registry.get("mine") is mine
    assert [p.describe() for p in registry.parameters("mine")] == ["width: int = 3"]

    def needs_stream(stream: TextIO): ...

    with pytest.raises(TypeError, match=r"required argument 'stream' has no plain-data type"):
        registry.register("needs_stream", needs_stream)
    assert "needs_stream" not in registry
