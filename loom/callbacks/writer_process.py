"""A tracker's writer process, both ends: :class:`WriterProcess` in the training process,
:func:`serve` in the writer.

A tracker's library may spend far more Python on a record than a small model's step
takes: MLflow's client 0.3 ms a metric, TensorBoard's pure-Python CRC of each event. On
the training thread (or on a thread of its, which holds the interpreter's lock) that
is paid by the step. So the training process only sends the records, a JSON line
each, to a process of the tracker's own, which writes them on another core.

The protocol, a JSON object a line. The writer reads requests on standard input:

- first the tracker's settings (what its sink's ``open_sink`` takes);
- ``{"metrics": [[key, value, milliseconds, step], ...]}``, written in batches, none
  waiting more than a second;
- ``{"flush": token}``: replied ``{"flushed": token}`` once all before it is written;
- ``{"close": status}``: the run ended with ``status``, replied ``{"closed": status}``;
- anything else: the sink's own (``{"artifacts": ...}``, ``{"images": ...}``).

It replies on standard output: first ``{"ready": ...}`` (what the sink says of itself:
MLflow's run id), and ``{"error": message}`` when its library fails, after which it ends
the run ``FAILED`` and exits. When its input ends without a ``close`` (the training
process is gone, whatever ended it), it writes what came and ends the run ``FAILED``.

This module imports nothing of loom's, nor torch: run as a script
(``python writer_process.py SINK``), it is the writer, and loads its sink (the file that
holds its tracker's ``open_sink``) by path.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol

__all__ = ["Lines", "Sink", "WriterProcess", "serve"]


class Lines:
    """The lines of a file descriptor, each waited for at most a given time."""

    def __init__(self, descriptor: int):
        self.descriptor = descriptor
        self.buffer = bytearray()
        self.ended = False
        # A selector, not select.select, which refuses descriptors from 1024 on.
        self.selector = selectors.DefaultSelector()
        self.selector.register(descriptor, selectors.EVENT_READ)

    def next(self, timeout: float | None = None) -> str | None:
        """The next line; None when none came within ``timeout`` seconds (None: no
        limit); ``""`` at the end of the input."""
        end = self.buffer.find(b"\n")
        while end < 0:
            if self.ended:
                return ""
            if not self.selector.select(timeout):
                return None
            chunk = os.read(self.descriptor, 1 << 16)
            self.ended = not chunk
            self.buffer += chunk
            end = self.buffer.find(b"\n")
        line = self.buffer[:end].decode("utf-8")
        del self.buffer[: end + 1]  # cheap at a bytearray's front
        return line

    def close(self) -> None:
        self.selector.close()


class WriterProcess:
    """The training process's end: starts the writer of ``sink``, sends it requests,
    reads its replies, and stops it; a failure of the writer is raised as the tracker's.

    Args:
        sink: The file of the writer's sink (``mlflow_writer.py``), whose
            ``open_sink(settings)`` this module's :func:`serve` runs, in a process
            started as ``python writer_process.py SINK``.
        owner: The tracker's name, for errors (``"MLflowLogger"``).
        where: What the writer writes to, for errors: ``"MLflow at <uri>"``,
            ``"TensorBoard in <folder>"``.
        timeout: The most seconds to wait for a reply; past it the writer is killed.
    """

    def __init__(self, sink: Path, owner: str, where: str, timeout: float):
        self.owner, self.where, self.timeout = owner, where, timeout
        self.ready: Any = None  # the writer's first reply, once read
        self._ready_read = False
        self._returncode: int | None = None
        self._process = subprocess.Popen(
            [sys.executable, __file__, str(sink)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            # Out of the trainer's process group: a Ctrl-C, or torchrun's SIGTERM to its
            # workers' group, interrupts training, which then ends the writer itself.
            start_new_session=True,
        )
        self._replies = Lines(self._process.stdout.fileno())
        # Requests are written without blocking, so that a stalled writer whose pipe is
        # full is a timeout, not a training stopped in write() for good.
        os.set_blocking(self._process.stdin.fileno(), False)
        self._room = selectors.DefaultSelector()
        self._room.register(self._process.stdin.fileno(), selectors.EVENT_WRITE)
        self._started_by = os.getpid()  # a forked child's exit is not this writer's end
        atexit.register(self.abandon)

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int:
        return self._process.pid

    def start(self, settings: dict[str, Any], wait: bool) -> Any:
        """Sends the settings; with ``wait``, returns the writer's ``ready`` reply (a
        failure to open is then raised here, else at the next request)."""
        try:
            self.send(settings)
            if wait:
                self._read_ready("to open the run")
        except BaseException:
            self.stop()  # it has ended, or cannot go on
            raise
        return self.ready

    def send(self, request: dict[str, Any]) -> None:
        """Sends ``request``, after raising the error the writer replied since the last."""
        while True:  # the writer speaks unasked only to be ready, or to fail
            unasked = self._replies.next(timeout=0.0)
            if unasked is None:
                break
            self._take_ready(unasked, "to write the records")
        data = memoryview(json.dumps(request).encode("utf-8") + b"\n")
        deadline = time.monotonic() + self.timeout
        while data:
            try:
                data = data[os.write(self._process.stdin.fileno(), data) :]
            except BlockingIOError:  # the pipe is full: the writer is behind
                if not self._room.select(max(0.0, deadline - time.monotonic())):
                    self._time_out("to take the records")
            except BrokenPipeError:
                self._raise(self._last_words(), "to take the records")

    def ask(self, request: dict[str, Any], expected: str, doing: str) -> Any:
        """Sends ``request`` and returns the writer's reply, which must be ``expected``."""
        self.send(request)
        try:
            if not self._ready_read:
                self._read_ready(doing)
            line = self._next(doing)
        except KeyboardInterrupt:  # its reply would come unasked: the writer goes now
            self.stop()
            raise
        reply = json.loads(line) if line else {}
        if expected not in reply:
            self._raise(line, doing)
        return reply[expected]

    def flush(self, token: int) -> None:
        """Waits until every record sent so far is written."""
        if self.ask({"flush": token}, "flushed", "to write the records") != token:
            raise RuntimeError(f"{self.owner}: its writer flushed out of order, not {token}.")

    def end(self, status: str) -> None:
        """Ends the run with ``status`` and waits for the writer to exit."""
        try:
            self.ask({"close": status}, "closed", "to end the run")
        finally:
            self.stop()

    def abandon(self) -> None:
        """At the exit of a process whose training raised: what was sent is written, and
        the run ended ``FAILED``. Never raises: the training's own error is the one to see."""
        if self._process is None or os.getpid() != self._started_by:
            return
        try:
            self.end("FAILED")
        except Exception as error:
            print(f"{self.owner}: its writer could not finish: {error}", file=sys.stderr)

    def stop(self, kill: bool = False) -> None:
        """Ends the writer's input (it then ends the run, if no ``close`` came before)
        and waits for it; or kills it."""
        if self._process is None:
            return
        atexit.unregister(self.abandon)
        process, self._process = self._process, None
        with contextlib.suppress(BrokenPipeError):  # it has gone already
            process.stdin.close()
        try:
            if kill:
                process.kill()
            process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
        self._replies.close()
        self._room.close()
        self._returncode = process.returncode

    def _read_ready(self, doing: str) -> None:
        self._take_ready(self._next(doing), doing)

    def _take_ready(self, line: str, doing: str) -> None:
        reply = json.loads(line) if line else {}
        if self._ready_read or "ready" not in reply:
            self._raise(line, doing)
        self.ready, self._ready_read = reply["ready"], True

    def _next(self, doing: str) -> str:
        line = self._replies.next(timeout=self.timeout)
        if line is None:
            self._time_out(doing)
        return line

    def _time_out(self, doing: str) -> NoReturn:
        self.stop(kill=True)  # what it would still say comes too late
        raise TimeoutError(
            f"{self.owner}: its writer took over timeout={self.timeout:g} s {doing} at "
            f"{self.where}; it was stopped."
        )

    def _last_words(self) -> str:
        """Of what a writer that has gone replied last, its error (or ``""``)."""
        while True:
            line = self._replies.next(timeout=self.timeout)
            if not line or "error" in json.loads(line):
                return line or ""

    def _raise(self, line: str, doing: str) -> NoReturn:
        """The writer's error (on ``line``: an error, or the end of its replies) as the
        tracker's; the writer, which ends the run after an error, is stopped."""
        error = json.loads(line).get("error") if line else None
        self.stop()
        if error is not None:
            raise RuntimeError(f"{self.owner}: {self.where} failed: {error}")
        code = self._returncode
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        raise RuntimeError(
            f"{self.owner}: its writer process ended ({how}) before it had a chance {doing}"
            + ("; its error is above." if code > 0 else ".")
        )


class Sink(Protocol):
    """What a writer script writes to: its tracker's library."""

    ready: Any
    """What the writer replies first (MLflow's run id)."""

    def log_metrics(self, records: list[list[Any]]) -> None: ...

    def handle(self, request: dict[str, Any]) -> None:
        """A request of the tracker's own."""

    def flush(self) -> None: ...

    def end(self, status: str) -> None: ...


def serve(open_sink: Callable[[dict[str, Any]], Sink]) -> None:
    """The writer's loop: opens the sink with the settings, replies ``ready``, then takes
    the requests in order until ``close`` or the end of its input."""
    # The trainer ends this process (by closing its input), never a signal meant for the
    # training: an interrupted training's checkpoint still sends its records here.
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    replies = _take_standard_output()
    requests = Lines(sys.stdin.fileno())
    try:
        sink = open_sink(json.loads(requests.next() or "{}"))
    except Exception as error:
        _reply(replies, error=_describe(error))
        return
    _reply(replies, ready=sink.ready)
    status = "FAILED"
    try:
        status = _take_requests(requests, replies, sink)
    except Exception as error:
        _reply(replies, error=_describe(error))
    finally:
        sink.end(status)
    _reply(replies, closed=status)


_LINGER_SECONDS = 1.0
"""The longest a record waits to be written with those that come after it: one call
writes them all (a call costs MLflow's SQLite store 5 ms whatever it holds)."""


def _take_requests(requests: Lines, replies: int, sink: Sink) -> str:
    pending: list[list[Any]] = []
    since = 0.0  # when the oldest pending record came
    while True:
        waited = time.monotonic() - since
        if pending and waited >= _LINGER_SECONDS:  # however fast more comes
            sink.log_metrics(pending)
            pending = []
        line = requests.next(timeout=max(0.0, _LINGER_SECONDS - waited) if pending else None)
        if line is None:
            sink.log_metrics(pending)
            pending = []
            continue
        if line == "":
            sink.log_metrics(pending)
            return "FAILED"  # the training process is gone without a word
        request = json.loads(line)
        if "metrics" in request:
            if not pending:
                since = time.monotonic()
            pending += request["metrics"]
            continue
        if pending:
            sink.log_metrics(pending)
            pending = []
        if "flush" in request:
            sink.flush()
            _reply(replies, flushed=request["flush"])
        elif "close" in request:
            return request["close"]
        else:
            sink.handle(request)


def _take_standard_output() -> int:
    """The replies' channel, standard output as it came (its descriptor, written
    unbuffered); what the library itself prints goes to standard error instead."""
    replies = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return replies


def _reply(replies: int, **reply: Any) -> None:
    with contextlib.suppress(BrokenPipeError):  # the trainer is gone: no one to tell
        os.write(replies, (json.dumps(reply) + "\n").encode("utf-8"))


def _describe(error: BaseException) -> str:
    """A library's error as one line: its type and its message's first line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _load_sink(path: Path) -> Callable[[dict[str, Any]], Sink]:
    """The ``open_sink`` of the sink module at ``path``, loaded by its path: the writer
    needs its tracker's library, not loom (nor torch, for MLflow)."""
    spec = importlib.util.spec_from_file_location(f"loom_writer_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.open_sink


if __name__ == "__main__":
    # Run as a script: its folder's modules (checkpoint.py, progress.py...) are not the
    # ones its library's imports mean.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    serve(_load_sink(Path(sys.argv[1])))
