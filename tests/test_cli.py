import subprocess
import sys

import pytest

import loom
from loom.cli import main
from loom.trainer import Event


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"loom {loom.__version__}"
    assert main([]) == 0
    assert "events" in capsys.readouterr().out


def test_events_prints_the_loop(capsys):
    assert main(["events"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.strip() for line in lines] == [event.value for event in Event]


def test_python_dash_m_loom_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "loom", "events"], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[0] == "init"
