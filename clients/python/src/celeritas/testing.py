"""Real celeritas servers for tests: :class:`DevServer` runs ``celeritas dev``.

``celeritas dev`` is a coordinator plus a worker on every queue, on an embedded SQLite store in
its working directory, with built-in tasks (``noop``, ``sleep``, ``fail``, ``fan_out``,
``emit_records``, ``test_celery``). Tests of code that calls celeritas can run against it
instead of a mock:

>>> with DevServer(find_binary()) as server:
...     client = celeritas.Client(server.url)
...     client.result(client.submit("noop", {"x": 1}).task_id, timeout=10)
{'x': 1}
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DevServer", "DevServerError", "find_binary", "free_port"]

#: How long a server may take to print its address.
STARTUP_TIMEOUT_SECONDS = 30.0


class DevServerError(RuntimeError):
    """The server could not be found, or did not start; the message has its log's tail."""


def find_binary(default: str | os.PathLike[str] | None = None) -> Path:
    """The ``celeritas`` executable: ``$CELERITAS_BIN`` when set, else ``default``, else the
    one on ``PATH``."""
    candidates: list[str] = []
    from_environment = os.environ.get("CELERITAS_BIN")
    if from_environment:
        candidates.append(from_environment)
    elif default is not None:
        candidates.append(os.fspath(default))
    else:
        on_path = shutil.which("celeritas")
        if on_path:
            candidates.append(on_path)
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise DevServerError(
        f"no celeritas executable at {candidates or 'PATH'}; build one with `cargo build` or "
        "point CELERITAS_BIN at it"
    )


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DevServer:
    """A ``celeritas dev`` process on a loopback port, in a working directory of its own.

    ``working_directory`` defaults to a fresh temporary directory (removed on :meth:`stop`
    when the server created it); pass the same directory and ``port`` to a second server to
    restart "the same" coordinator on its store. ``environment`` adds variables, such as
    ``CELERITAS_COORDINATOR__LEASE_TTL`` overrides. The server's log (stderr) goes to
    ``celeritas.log`` in the working directory.

    ``builtin_worker=False`` runs ``celeritas coordinator`` on the same embedded store instead:
    no worker at all, so the tasks of its queues wait for the workers a test starts.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str],
        *,
        port: int | None = None,
        working_directory: str | os.PathLike[str] | None = None,
        environment: Mapping[str, str] | None = None,
        concurrency: int | None = None,
        builtin_worker: bool = True,
    ) -> None:
        self.binary = Path(binary)
        self.port = port if port is not None else free_port()
        self._owns_directory = working_directory is None
        self.working_directory = Path(
            working_directory
            if working_directory is not None
            else tempfile.mkdtemp(prefix="celeritas-dev-")
        )
        self.environment = dict(environment or {})
        self.concurrency = concurrency
        self.builtin_worker = builtin_worker
        self.process: subprocess.Popen[bytes] | None = None
        self._stdout_lines: list[str] = []
        self._stdout_reader: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, for :class:`celeritas.Client`."""
        return f"http://{self.address}"

    @property
    def log_path(self) -> Path:
        return self.working_directory / "celeritas.log"

    def start(self) -> DevServer:
        """Starts the process and returns once it listens. Raises :class:`DevServerError` if it
        exits or stays silent for :data:`STARTUP_TIMEOUT_SECONDS`."""
        if self.process is not None:
            raise DevServerError("already started")
        # A stopped server may be started again: same port, same directory, same store.
        self._stdout_lines = []
        if self.builtin_worker:
            command = [os.fspath(self.binary), "dev", "--listen", self.address]
        else:
            store = self.working_directory / ".celeritas" / "celeritas.db"
            store.parent.mkdir(exist_ok=True)
            command = [
                os.fspath(self.binary),
                "coordinator",
                "--listen",
                self.address,
                "--metrics-listen",
                "none",
                "--database-url",
                f"sqlite://{store}",
            ]
        if self.concurrency is not None and self.builtin_worker:
            command += ["--concurrency", str(self.concurrency)]
        environment = {**os.environ, **self.environment}
        # The server must use its working directory's store, never one a developer pointed
        # their shell at.
        environment.pop("DATABASE_URL", None)
        environment.pop("CELERITAS_CONFIG", None)
        environment.setdefault("RUST_LOG", "info")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.working_directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        first_line = threading.Event()
        # The server prints its address first and a few more lines after; keep reading so it
        # never blocks on a full pipe.
        self._stdout_reader = threading.Thread(
            target=self._drain_stdout, args=(first_line,), name=f"celeritas-dev-{self.port}", daemon=True
        )
        self._stdout_reader.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not first_line.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise DevServerError(f"celeritas dev did not start; its log ends:\n{self.log_tail()}")
        if not self._stdout_lines:
            # Standard output closed without a line: the process is exiting.
            exit_code = self.kill()
            raise DevServerError(
                f"celeritas dev exited (code {exit_code}) before listening; its log ends:\n"
                f"{self.log_tail()}"
            )
        if not self._stdout_lines[0].startswith("listening on "):
            self.kill()
            raise DevServerError(
                f"unexpected first line {self._stdout_lines[:1]!r}; log:\n{self.log_tail()}"
            )
        return self

    def _drain_stdout(self, first_line: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw_line in self.process.stdout:
            self._stdout_lines.append(raw_line.decode(errors="replace").rstrip("\n"))
            first_line.set()
        first_line.set()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stops the server cleanly (SIGTERM: the worker drains, the coordinator ends its
        streams), killing it after ``timeout``. Returns its exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """Kills the server at once (SIGKILL), as a crash would."""
        return self._end(signal.SIGKILL, 10.0)

    def _end(self, signal_number: int, timeout: float) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal_number)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._stdout_reader is not None:
            self._stdout_reader.join(5)
            self._stdout_reader = None
        return process.returncode

    def close(self) -> None:
        """Stops the server and removes the working directory if this object created it."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.working_directory, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exception_info: object) -> None:
        self.close()
