import io

import pytest

from loom import Trainer
from loom.callbacks import ProgressBar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def run(model, loaders, optimizer, bar, **kwargs):
    Trainer(
        model,
        loaders[0],
        optimizers=optimizer,
        max_duration="2ep",
        callbacks=[bar],
        device="cpu",
        **kwargs,
    ).fit()


def test_plain_lines_when_not_a_terminal(model, loaders, optimizer):
    stream = io.StringIO()
    run(model, loaders, optimizer, ProgressBar(every_n_batches=4, stream=stream))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, "8 batches per epoch, a line every 4, two epochs"
    assert lines[0].startswith("epoch 1/2 [############............] 4/8 loss ")
    assert lines[-1].startswith("epoch 2/2 [########################] 8/8 loss ")
    assert lines[-1].endswith("samples/s")
    assert "\r" not in stream.getvalue()


def test_live_bar_on_a_terminal_redraws_one_line_per_epoch(model, loaders, optimizer):
    stream = FakeTerminal()
    run(model, loaders, optimizer, ProgressBar(stream=stream))
    epochs = stream.getvalue().split("\n")[:-1]
    assert len(epochs) == 2
    assert all(epoch.startswith("\r") for epoch in epochs)
    assert "8/8" in epochs[1].split("\r")[-1], "the last draw of an epoch shows it complete"


def test_only_the_main_process_prints(model, loaders, optimizer):
    stream = io.StringIO()
    bar = ProgressBar(every_n_batches=1, stream=stream)
    trainer = Trainer(
        model, loaders[0], optimizers=optimizer, max_duration="1ep", callbacks=[bar], device="cpu"
    )
    trainer.state.rank = 1
    trainer.fit()
    assert stream.getvalue() == ""


def test_bad_interval():
    with pytest.raises(ValueError, match=r"every_n_batches=0 must be an int >= 1"):
        ProgressBar(every_n_batches=0)


def test_batch_durations_show_no_epoch_total(model, loaders, optimizer):
    stream = io.StringIO()
    bar = ProgressBar(every_n_batches=1, stream=stream)
    Trainer(
        model, loaders[0], optimizers=optimizer, max_duration="1ba", callbacks=[bar], device="cpu"
    ).fit()
    assert stream.getvalue().startswith("epoch 1 [")
