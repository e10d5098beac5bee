"""A Redis and a PostgreSQL of a test's own, to stop, kill and restart: the outage tests' services.

The shared services of the machine stay untouched: each private one listens on a free port of
127.0.0.1 and keeps its files under the test's temporary folder. PostgreSQL is a cluster made by
``initdb`` (run as the ``postgres`` user when the tests run as root, as the server refuses root).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.services import services_required


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, up: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} did not {'open' if up else 'close'} within {timeout:.0f} s")


def _missing(program: str) -> None:
    message = f"{program} is not installed: the outage tests start services of their own"
    if services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class PrivateRedis:
    """``redis-server`` on a free port; without persistence unless ``appendonly``."""

    def __init__(self, folder: Path, appendonly: bool = False):
        self.folder, self.appendonly = folder, appendonly
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        if shutil.which("redis-server") is None:
            _missing("redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence]
        self.proc = subprocess.Popen([*command, "--dir", str(self.folder)], stdout=subprocess.DEVNULL, start_new_session=True)
        _wait_for_port(self.port, up=True)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: without persistence every message is lost."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        _wait_for_port(self.port, up=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)


class PrivatePostgres:
    """A PostgreSQL cluster of its own on a free port, with one database, ``morphomass``."""

    def __init__(self, folder: Path):
        self.as_postgres = os.geteuid() == 0  # the server refuses to run as root
        # As root, a folder of its own outside pytest's (whose 0700 parents the postgres user cannot enter).
        self.folder = Path(tempfile.mkdtemp(prefix="morphomass-postgres-")) if self.as_postgres else folder
        self.port = free_port()
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        self.bin = found[-1].parent if found else None
        if self.bin is None and shutil.which("initdb") is None:
            _missing("initdb")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/morphomass"

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        path = str(self.bin / program) if self.bin is not None else program
        command = ["runuser", "-u", "postgres", "--", path, *args] if self.as_postgres else [path, *args]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def create(self) -> PrivatePostgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "morphomass")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w", "start")
        _wait_for_port(self.port, up=True)

    def stop(self) -> None:
        """A fast shutdown: every session is disconnected, as on a server restart or outage."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        _wait_for_port(self.port, up=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
