"""Atomic file writing: readers, and crashes, see the old file or the new one."""

import errno
import os
from pathlib import Path

import pytest
import torch

from loom.trainer import (
    FileWriteError,
    capture_checkpoint,
    files,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    write_atomically,
)
from loom.trainer.files import publish_folder, temporary_folder
from tests.conftest import tiny_trainer


def test_a_save_that_dies_halfway_leaves_the_previous_checkpoint(saved, monkeypatch):
    trainer, path = saved
    before = path.read_bytes()

    def dies_halfway(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(capture_checkpoint(trainer.state), path)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["timestamp"]["batch"] == 6
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [("text é", "text é".encode()), (b"\x00bytes", b"\x00bytes"), (lambda f: f.write(b"f"), b"f")],
    ids=["text", "bytes", "writer"],
)
def test_text_bytes_or_a_writer_land_whole_in_a_new_folder(tmp_path, content, expected):
    path = tmp_path / "new" / "folder" / "file"
    assert write_atomically(path, content) == path
    assert path.read_bytes() == expected
    assert [p.name for p in path.parent.iterdir()] == ["file"], "no temporary file is left"


def test_a_link_planted_at_the_temporary_name_is_never_written_through(tmp_path, monkeypatch):
    """The temporary file is created anew: a link someone planted at the name it would
    take (before: always ``.NAME.tmp``) is passed over, and what it points at is untouched."""
    target = tmp_path / "precious"
    target.write_text("keep me")
    tokens = iter(["planted1", "fresh002"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda _: next(tokens))
    (tmp_path / ".summary.json.planted1.tmp").symlink_to(target)
    (tmp_path / ".summary.json.tmp").symlink_to(target)  # the one name loom used to take
    write_atomically(tmp_path / "summary.json", "new")
    assert target.read_text() == "keep me"
    assert (tmp_path / "summary.json").read_text() == "new"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_torch_save_is_one_error_naming_the_file(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError of its zip writer's (before:
    40 lines naming neither disk nor file); the error is the OSError underneath, with
    the file, in one line. /dev/full fails every write as a full disk does."""
    path = tmp_path / "epoch1-batch3.pt"
    temporary = tmp_path / ".epoch1-batch3.pt.full.tmp"
    monkeypatch.setattr(
        files, "_create_temporary", lambda _: (temporary, os.open("/dev/full", os.O_WRONLY))
    )
    with pytest.raises(FileWriteError) as raised:
        write_atomically(path, lambda file: torch.save({"a": torch.ones(1000)}, file))
    assert str(raised.value) == (
        f"cannot write {path}: No space left on device (the disk is full: free space, then "
        "resume the run)"
    )
    assert raised.value.errno == errno.ENOSPC
    assert not path.exists()


def test_stale_temporaries_of_a_killed_save_go_at_the_next_start(tmp_path):
    """A save killed mid-write leaves its temporary file; the next run's checkpoint
    callback removes it (and only such files) before it saves anything."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".epoch1-batch3.pt.3f9a1c2e.tmp").write_bytes(b"half a checkpoint")
    (folder / "notes.txt").write_text("mine")
    (folder / ".notes.txt.tmp").write_text("mine too: not a name loom gives")
    tiny_trainer(folder, max_duration="1ba").fit()
    assert sorted(p.name for p in folder.iterdir()) == [
        ".notes.txt.tmp", "epoch0-batch1.pt", "notes.txt",
    ]  # fmt: skip


def test_a_folder_is_published_whole_and_replaces_the_one_at_its_name(tmp_path):
    target = tmp_path / "checkpoints" / "epoch1-batch4"
    temporary = temporary_folder(target)
    assert temporary.parent == target.parent
    assert temporary.name.startswith(".epoch1-batch4.")
    assert temporary.name.endswith(".tmp")
    (temporary / "run.pt").write_bytes(b"first")
    assert publish_folder(temporary, target) == target
    again = temporary_folder(target)  # a resumed run writing the same checkpoint again
    (again / "run.pt").write_bytes(b"second")
    publish_folder(again, target)
    assert (target / "run.pt").read_bytes() == b"second"
    assert sorted(path.name for path in target.parent.iterdir()) == ["epoch1-batch4"]


def test_a_folder_a_killed_sharded_save_left_goes_at_the_next_start(tmp_path):
    folder = tmp_path / "checkpoints"
    half = folder / ".epoch1-batch4.3f9a1c2e.tmp"
    half.mkdir(parents=True)
    (half / "__0_0.distcp").write_bytes(b"half a shard")
    (folder / "mine").mkdir()
    assert remove_stale_temporaries(folder) == [half]
    assert sorted(path.name for path in folder.iterdir()) == ["mine"]


def test_a_folder_set_aside_by_a_killed_publish_is_put_back(tmp_path):
    """A kill between publish_folder's two renames leaves the old checkpoint aside and
    the new one a temporary: the next start gives the old one its name back."""
    folder = tmp_path / "checkpoints"
    aside = folder / ".epoch1-batch4.replaced"
    aside.mkdir(parents=True)
    (aside / "run.pt").write_bytes(b"the old one")
    (folder / ".epoch1-batch4.3f9a1c2e.tmp").mkdir()
    remove_stale_temporaries(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["epoch1-batch4"]
    assert (folder / "epoch1-batch4" / "run.pt").read_bytes() == b"the old one"
