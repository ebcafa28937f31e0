"""A throwaway SecantusDB server (a MongoDB-wire-compatible server from PyPI) in a temp dir.

The demo and the test suite use it where no MongoDB is at hand. It runs as a subprocess (its
`python -m secantus` CLI) so fault tests can kill it and restart it on the same port.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from parallelsync.demo.postgres import (
    _LIVE,
    DEFAULT_TIMEOUT,
    ServerError,
    free_port,
    port_open,
    tail,
)

# Runs `secantus.cli.main` like `python -m secantus`, with one fix: its main thread idles in
# `Event.wait()` without a timeout, and when the kernel delivers SIGTERM to another of its threads
# the main thread never wakes to run the handler, so about one stop in three hung until SIGKILL
# (seen with secantusdb 0.7.0b3). A timed wait returns to the interpreter, which runs the handler.
_SECANTUS_LAUNCHER = """\
# Written by parallelsync: `python -m secantus` with a signal-safe wait.
import sys
from secantus.server import SecantusDBServer
from secantus.cli import main

_original_wait = SecantusDBServer.wait


def _wait(self):
    event = getattr(self, "_stop_event", None)
    if event is None:
        return _original_wait(self)
    while not event.wait(0.2):
        pass


SecantusDBServer.wait = _wait
sys.argv[0] = "secantus"
raise SystemExit(main(sys.argv[1:]))
"""


class _PortTaken(Exception):
    """The server exited at start because its port was bound by someone else."""


class SecantusServer:
    """SecantusDB as a subprocess (its `python -m secantus` CLI) on 127.0.0.1:<port>.

    A subprocess rather than in-process so fault tests can kill it (SIGKILL) and restart it on
    the same port. The storage lives in a temp dir (not ':memory:') so a restart keeps the data;
    an empty `--config` file stops it from picking up a stray ./secantusd.toml.
    """

    can_restart = True
    host = "127.0.0.1"
    READY = "secantus listening on"

    def __init__(
        self,
        port: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.port = port or free_port()
        # A port picked here was only free a moment ago: another process (a parallel test
        # worker, say) may bind it first, so the first start may move to another one. A port
        # the caller chose, or one the server has already run on (restart), must stay.
        self._may_move = port is None
        self.timeout = timeout
        self.extra_args = list(extra_args)
        self.python = python
        self.basedir = Path(tempfile.mkdtemp(prefix="parallelsync-secantus-"))
        self.storage_path = self.basedir / "data"
        self.logfile = self.basedir / "secantus.log"
        self.config = self.basedir / "secantusd.toml"
        self.config.write_text("# empty: disables config auto-discovery\n")
        self.launcher = self.basedir / "run_secantus.py"
        self.launcher.write_text(_SECANTUS_LAUNCHER)
        self._proc: subprocess.Popen[bytes] | None = None
        _LIVE.add(self)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> None:
        """Start and wait for the 'listening' line; raise ServerError with the log tail if not."""
        if self.running:
            return
        for attempt in range(3 if self._may_move else 1):
            try:
                self._start_once()
                break
            except _PortTaken:
                if attempt == 2:
                    raise ServerError(
                        f"secantus could not bind a free port (3 tries, last {self.port})\n"
                        f"log tail ({self.logfile}):\n{tail(self.logfile)}"
                    ) from None
                self.port = free_port()
        self._may_move = False

    def _start_once(self) -> None:
        args = [
            self.python, str(self.launcher),
            "--config", str(self.config),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.storage_path),
            "--enable-test-commands",
            "--log-level", "INFO",
            *self.extra_args,
        ]  # fmt: skip
        with self.logfile.open("ab") as log:
            log.write(f"---- start {time.strftime('%H:%M:%S')}: {' '.join(args)}\n".encode())
            log.flush()
            offset = log.tell()
            self._proc = subprocess.Popen(
                args, cwd=self.basedir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                with self.logfile.open("rb") as f:
                    f.seek(offset)
                    if self._may_move and b"Address already in use" in f.read():
                        raise _PortTaken
                raise ServerError(
                    f"secantus exited with code {code} while starting on port {self.port}\n"
                    f"log tail ({self.logfile}):\n{tail(self.logfile)}"
                )
            with self.logfile.open("rb") as f:
                f.seek(offset)
                if self.READY.encode() in f.read() and port_open(self.host, self.port):
                    return
            time.sleep(0.05)
        self.kill()
        raise ServerError(
            f"secantus did not start listening on port {self.port} within {self.timeout:.0f} s\n"
            f"log tail ({self.logfile}):\n{tail(self.logfile)}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM: closes WiredTiger cleanly); SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        # Closing a listening socket does not wake a thread blocked in accept() on Linux, so
        # secantus waits 2 s for its accept thread; a connection made after the handler ran
        # wakes it at once.
        for _ in range(20):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.1)
            if proc.poll() is not None:
                break
            port_open(self.host, self.port)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def kill(self) -> None:
        """Crash the server (SIGKILL), as a fault test would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or kill, with `crash=True`) and start again on the same port and storage."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self) -> SecantusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
