"""Real server processes for the security tests: the service under gunicorn, Redis.

``Gunicorn`` runs ``server:create_app()`` with several workers on a free port, with an access
log that names the worker (its pid) of each request, so a test can tell that every worker
answered. ``redis_url`` starts Debian's ``redis-server`` on a free port for the session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any LOYALTY_* of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(extra)
    return env


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``flask --app server ARGS`` in its own process, as an operator runs it."""
    return subprocess.run([str(BIN / "flask"), "--app", "server", *args], cwd=ROOT, env=env,
                          check=True, capture_output=True, text=True, timeout=120)


@dataclass
class Gunicorn:
    """``gunicorn -w N server:create_app()`` on a free port, in a process group of its own."""

    folder: Path
    env: dict[str, str]
    workers: int = 2
    url: str = ""
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    access_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.folder / "gunicorn.log"
        self.access_path = self.folder / "access.log"

    def start(self) -> Gunicorn:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [str(BIN / "gunicorn"), "--no-control-socket", "-w", str(self.workers),
               "-b", f"127.0.0.1:{port}", "--access-logfile", str(self.access_path),
               # the worker's pid and the status only: the test's own log, no paths
               "--access-logformat", "%(p)s %(s)s", "server:create_app()"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"gunicorn exited: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def access(self) -> list[tuple[str, int]]:
        """``(worker pid, status)`` of every request so far (a line per request)."""
        lines = self.access_path.read_text().split("\n") if self.access_path.exists() else []
        return [(pid, int(status)) for pid, status in (line.split() for line in lines if line)]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def on_every_worker(server: Gunicorn, send, workers: int | None = None,
                    tries: int = 200) -> list[requests.Response]:
    """Call ``send()`` (a request on a new connection) until every worker has answered one.

    Returns the responses in order. Which worker accepts a connection is the kernel's choice;
    a few dozen calls reach both of two workers in practice, ``tries`` bounds the wait.
    """
    want = workers or server.workers
    before = len(server.access())
    responses = []
    for _ in range(tries):
        responses.append(send())
        if len({pid for pid, _ in server.access()[before:]}) >= want:
            return responses
    pytest.fail(f"{tries} requests did not reach {want} workers: {server.access()[before:]}")


@pytest.fixture
def gunicorn_service(tmp_path):
    """``start(**env) -> (Gunicorn, creds)``: a migrated demo service under 2 workers."""
    started: list[Gunicorn] = []

    def start(workers: int = 2, **extra: str) -> tuple[Gunicorn, dict]:
        folder = tmp_path / f"service{len(started)}"
        folder.mkdir()
        env = clean_env(LOYALTY_INSTANCE_PATH=str(folder / "instance"), **extra)
        flask(env, "db", "upgrade")
        flask(env, "demo", "init")
        creds = json.loads((folder / "instance" / "demo-credentials.json").read_text())
        server = Gunicorn(folder, env, workers)
        started.append(server)
        return server.start(), creds

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis (Debian's ``redis-server``) on a free port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is missing: apt-get install redis-server (scripts/sysdeps.sh test)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
