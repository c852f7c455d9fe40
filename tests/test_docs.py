"""Every example in the README, the docs, the method cards and the docstrings runs.

A Markdown ```python block runs unless the line just before it is
``<!-- not run: REASON -->``. The blocks of one page share a namespace and run
in order, in a temporary working directory.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import loom

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "loom").rglob("README.md")]
)
_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.DOTALL)
_NOT_RUN = re.compile(r"<!-- not run: .+ -->")


def python_blocks(page: Path) -> list[str]:
    blocks = []
    for match in _BLOCK.finditer("\n" + page.read_text(encoding="utf-8")):
        if not _NOT_RUN.fullmatch(match.group("before").strip()):
            blocks.append(match.group("code"))
    return blocks


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_python_block_on_the_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for number, code in enumerate(python_blocks(page), start=1):
        compiled = compile(code, f"{page.name} python block {number}", "exec")
        exec(compiled, namespace)  # the page's own example code, run as a reader would


def test_not_run_blocks_give_a_reason():
    for page in PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith("<!-- not run"):
                assert _NOT_RUN.fullmatch(line.strip()), f"{page.name}: {line!r} needs a reason"


MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(loom.__path__, prefix="loom.")
    if name != "loom.__main__"  # running it is running the command
)


@pytest.mark.parametrize("module_name", ["loom", *MODULES])
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failures, _ = doctest.testmod(module, optionflags=flags, verbose=False)
    assert failures == 0


def test_the_public_api_has_docstring_examples():
    examples = 0
    for name in MODULES:
        finder = doctest.DocTestFinder()
        examples += sum(len(test.examples) for test in finder.find(importlib.import_module(name)))
    assert examples >= 20


def test_the_readme_quickstart_example_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="quickstart")
    metrics = namespace["main"]()
    assert metrics["eval/accuracy"] > 0.8
    assert (tmp_path / "runs" / "quickstart" / "metrics.jsonl").exists()
    assert "final eval accuracy" in capsys.readouterr().out


def with_composition(card: str, name: str) -> str:
    """``card`` with its "Composes with" table as the algorithms' effects give it now."""
    from loom.config.reference import COMPOSITION_MARKER, composition_markdown

    assert COMPOSITION_MARKER in card, f"a method card's 'Composes with' has {COMPOSITION_MARKER}"
    before, after = card.split(COMPOSITION_MARKER + "\n", 1)
    rest = after[after.index("\n## ") :] if "\n## " in after else ""
    return f"{before}{COMPOSITION_MARKER}\n{composition_markdown(name)}{rest}"


def write_compositions() -> None:
    """Rewrites every method card's "Composes with" table from the declared effects."""
    from loom.config import ALGORITHMS

    for name in ALGORITHMS:
        path = ROOT / "loom" / "algorithms" / name / "README.md"
        path.write_text(with_composition(path.read_text(encoding="utf-8"), name))


def test_every_method_card_says_what_composes_with_what_as_the_effects_do():
    from loom.config import ALGORITHMS

    for name in ALGORITHMS:
        path = ROOT / "loom" / "algorithms" / name / "README.md"
        card = path.read_text(encoding="utf-8")
        assert "## Composes with\n" in card, f"{path} has a 'Composes with' section"
        # To regenerate every card: python -c "from tests.test_docs import
        # write_compositions; write_compositions()"
        assert card == with_composition(card, name), f"regenerate {path}'s composition table"


def test_the_configuration_reference_covers_every_section_name_and_key():
    from loom.config.job import SECTIONS, TRAINER_ARGUMENTS_BUILT_BY_JOBS
    from loom.config.loaders import LOADER_FACTS, LOADERS
    from loom.config.reference import components_markdown, parameters_table
    from loom.config.schema import parameters_of

    reference = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"### `{section}`" in reference, section
    generated = reference.split("<!-- generated: loom list --markdown -->\n", 1)[1]
    assert generated == components_markdown(), "regenerate with: loom list --markdown"
    trainer_keys = parameters_of(loom.Trainer, skip=TRAINER_ARGUMENTS_BUILT_BY_JOBS)
    assert parameters_table(trainer_keys) in reference
    for split, loaders in LOADERS.items():
        for kind, factory in loaders.items():
            keys = parameters_of(factory, skip=LOADER_FACTS)
            assert parameters_table(keys) in reference, f"data.{split} with loader: {kind}"


def test_the_readme_starts_with_the_main_job_and_the_tests():
    commands = re.findall(r"```bash\n(?:#.*\n)?(.*)\n```", (ROOT / "README.md").read_text())[:2]
    assert commands == [
        'python3 -m pip install -e ".[digits]" && loom train configs/digits.yaml',
        'python3 -m pip install -e ".[test]" && python3 -m pytest',
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci


_YAML_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```yaml\n(?P<code>.*?)\n```", re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_yaml_job_fragment_on_the_page_is_valid(page):
    """A YAML block of job sections, laid over a minimal job, resolves."""
    import yaml

    from loom.config.job import SECTIONS, resolve_job

    minimal = {
        "model": {"name": "mlp"},
        "data": {"train": {"name": "synthetic"}},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "trainer": {"max_duration": "1ep"},
    }
    for match in _YAML_BLOCK.finditer("\n" + page.read_text(encoding="utf-8")):
        if _NOT_RUN.fullmatch(match.group("before").strip()):
            continue
        fragment = yaml.safe_load(match.group("code"))
        assert isinstance(fragment, dict)
        assert set(fragment) <= set(SECTIONS), f"{page.name}: {sorted(fragment)}"
        resolve_job({**minimal, **fragment})


def test_the_guides_module_runs_in_a_yaml_job(tmp_path):
    """docs/writing-an-algorithm.md, followed as a reader would: its module, then loom."""
    page = (ROOT / "docs" / "writing-an-algorithm.md").read_text(encoding="utf-8")
    module = re.search(r'```python\n("""my_mixup\.py.*?)\n```', page, re.DOTALL)
    (tmp_path / "my_mixup.py").write_text(module.group(1), encoding="utf-8")
    job = str(ROOT / "configs" / "digits_baseline.yaml")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "loom",
            "train",
            job,
            "algorithms=[{name: my_mixup, alpha: 0.2}]",
            "--import",
            "my_mixup",
            "--dry-run",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dry run passed" in result.stdout


def test_the_docs_site_builds_strictly(tmp_path):
    """With the docs extra installed: no broken link, no missing page, no bad reference."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "writing-an-algorithm" / "index.html").exists()


def test_the_concepts_page_shows_the_loop_as_loom_events_prints_it():
    from loom.trainer import Engine

    page = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    assert f"```text\n{Engine().schedule()}\n```" in page, "paste the output of: loom events"
