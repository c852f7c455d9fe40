"""Atomic file writing: readers, and crashes, see the old file or the new one."""

import pytest
import torch

from loom.trainer import capture_checkpoint, load_checkpoint, save_checkpoint, write_atomically


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
