"""DESIGN.md's import direction: functional <- trainer <- algorithms, callbacks <- config, runs."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "loom"

# What each package may import from loom (besides itself).
ALLOWED = {
    "functional": set(),
    "trainer": {"functional"},
    "algorithms": {"trainer", "functional"},
    "callbacks": {"trainer", "functional"},
    "data": set(),
    "models": set(),
    "optim": {"trainer"},
    "config": {"trainer", "functional", "algorithms", "callbacks", "data", "models", "optim"},
    "runs": {"trainer", "algorithms", "callbacks", "config", "data"},
}


def loom_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found.update(
            name.split(".")[1] for name in names if name.startswith("loom.") and "." in name
        )
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    for path in (PACKAGE / package).rglob("*.py"):
        outside = loom_imports(path) - {package} - ALLOWED[package]
        assert not outside, f"{path.relative_to(PACKAGE)} imports loom.{sorted(outside)}"


def test_functional_imports_only_torch_and_the_standard_library():
    for path in (PACKAGE / "functional").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for module in modules:
                    top = module.split(".")[0]
                    allowed = top in {"torch", "loom"} or top in sys.stdlib_module_names
                    assert allowed, f"{path.name} imports {module}"


def test_importing_loom_stays_light():
    code = (
        "import sys, loom, loom.trainer; print('torchvision' in sys.modules, 'yaml' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
