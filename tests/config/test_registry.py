from pathlib import Path

import pytest

import loom.algorithms
from loom.config import ALGORITHMS, Registry
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


def test_unknown_names_suggest_the_closest():
    with pytest.raises(
        KeyError, match=r"unknown algorithm 'label_smothing'; did you mean 'label_smoothing'\?"
    ):
        ALGORITHMS.get("label_smothing")
    with pytest.raises(KeyError, match=r"unknown algorithm 'zzz'; Known: label_smoothing"):
        ALGORITHMS.get("zzz")


def test_a_name_is_registered_once():
    registry = Registry("callback", {"a": int})
    registry.register("a", int)  # the same component again is fine
    with pytest.raises(ValueError, match=r"callback name 'a' is already registered"):
        registry.register("a", float)
    with pytest.raises(
        ValueError, match=r"callback name 'not valid' must be a lowercase identifier"
    ):
        registry.register("not valid", float)
