"""Fault injection: ten tills through a killed server, restarted PostgreSQL and killed agents.

Real parts only: a private PostgreSQL cluster (its own, so that it can be restarted with
``pg_ctl restart -m fast`` and ``-m immediate``), the service under gunicorn as systemd starts
it, ten till agents under gunicorn (each with its own device key and durable outbox) and, for
each, a simulated till: a thread that calls its agent's local API the way a reader and a
point-of-sale program do (``POST /simulate`` for a tap, ``POST /purchases``), and the service
directly for redemptions and refunds, which the agent does not forward. The simulator keeps
every event id it was told was recorded; ``FaultRun.verify`` then checks the databases.

Used by tests/test_faults.py (a short run) and ``make faults`` (``FAULTS_SECONDS``, longer).
See docs/RESILIENCE.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.fixtures_server import _as_pg_user, _free_port, _pg_bindir, _scratch_dir

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
TILLS = 10
CUSTOMERS = 24
STORE = "FAULTS"

# what a traceback in the service's log may end with: the database went away under a request
EXPECTED_ERRORS = re.compile(
    r"(OperationalError|AdminShutdown|ConnectionFailure|ConnectionTimeout|"
    r"server closed the connection|terminating connection|connection is closed|"
    r"the database system is (starting up|shutting down|in recovery mode)|"
    r"Connection refused|consuming input failed|connection failed)")


# "database unavailable: <class>" (server/__init__.py): these classes are a lost connection;
# any other (DeadlockDetected, SerializationFailure, QueryCanceled...) is a bug that the
# tills' retries would otherwise hide
LOST_CONNECTION = {"OperationalError", "AdminShutdown", "ConnectionTimeout",
                   "CannotConnectNow", "ConnectionFailure", "ConnectionException"}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's LOYALTY_*, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- PostgreSQL


class PgCluster:
    """A throwaway PostgreSQL cluster that can be restarted (``fast`` or ``immediate``).

    ``synchronous_commit`` stays on: with it off, an immediate shutdown loses commits the
    service already acknowledged, which would be the configuration's fault, not the code's.
    ``fsync`` is off: the kernel survives every fault here, so its page cache is durable.
    """

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package 'postgresql')")
        self.bindir = bindir
        self.tmp = Path(tempfile.mkdtemp(prefix="loyalty-faults-pg-", dir=_scratch_dir()))
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
        self.data = self.tmp / "data"
        self.log = self.tmp / "server.log"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/"
        self.options = (f"-k {self.tmp} -h 127.0.0.1 -p {self.port} -c fsync=off "
                        "-c full_page_writes=off -c max_connections=200")

    def _ctl(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(_as_pg_user([str(self.bindir / "pg_ctl"), "-D", str(self.data),
                                    "-l", str(self.log), *args]),
                       check=True, capture_output=True, text=True, timeout=timeout)

    def start(self) -> PgCluster:
        subprocess.run(_as_pg_user([str(self.bindir / "initdb"), "-D", str(self.data), "-A",
                                    "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, text=True, timeout=120)
        self._ctl("-w", "-t", "60", "-o", self.options, "start")
        return self

    def restart(self, mode: str) -> None:
        """``pg_ctl restart -m MODE``: every connection is cut; ``immediate`` also recovers."""
        self._ctl("-w", "-t", "60", "-m", mode, "-o", self.options, "restart")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def deadlocks(self) -> str:
        """PostgreSQL's own account of each deadlock it broke (the waits and the statements),
        for the failure message: the service only sees the class of the error."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        blocks = re.findall(r"ERROR:  deadlock detected\n(?:.*\n){0,12}", text)
        return "".join("\n" + block for block in blocks)

    def admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url + "postgres", autocommit=True) as conn:
            conn.execute(statement)


# --------------------------------------------------------------------------- processes


class Service:
    """A gunicorn master in a session of its own, killed with -9 as a group, started again."""

    def __init__(self, name: str, cmd: list[str], env: dict, health: str, log: Path) -> None:
        self.name, self.cmd, self.env, self.health, self.log = name, cmd, env, health, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> float:
        """Start and wait until ``health`` answers 200; returns the seconds it took."""
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=log,
                                         stderr=log, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.health, timeout=1).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL to the master and every worker (its process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()


# --------------------------------------------------------------------------- the network


class Partition:
    """A TCP relay between the agents and the service that can cut the link.

    No firewall is needed (nor root): the agents are given the relay's address. ``mode`` is
    ``pass`` (bytes flow), ``blackhole`` (connections stay open, nothing flows either way:
    the agent's request times out, as behind a dead switch) or ``drop-replies`` (requests
    reach the service, its answers are lost: the service has written what the agent will
    send again).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self._conns: list = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="partition", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()  # the service is down: as if nobody listened
                continue
            with self._lock:
                self._conns += [client, upstream]
            for src, dst, direction in ((client, upstream, "request"),
                                        (upstream, client, "reply")):
                threading.Thread(target=self._pipe, args=(src, dst, direction),
                                 daemon=True).start()

    def _pipe(self, src, dst, direction: str) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.mode == "blackhole" or (self.mode == "drop-replies"
                                                and direction == "reply"):
                    continue  # swallowed
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self, mode: str) -> None:
        self.mode = mode

    def heal(self) -> None:
        """Back to ``pass``; connections opened during the cut are closed (TCP gave up)."""
        self.mode = "pass"
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            # shutdown, not only close: it wakes the relay thread blocked in recv and sends
            # the FIN (a close from another thread would leave the connection hanging)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.heal()
        self.listener.close()


# --------------------------------------------------------------------------- the simulators


@dataclass
class Ledger:
    """What the simulated tills were told, by event id (thread-safe)."""

    taps: set[str] = field(default_factory=set)  # recorded (sent or queued) by the agent
    taps_unknown: int = 0  # the agent died before saying what became of a tap
    # each of those: (till, card URL, wall-clock time before the card was presented, after
    # the reader took it): it must be in the database all the same (written ahead)
    taps_unseen: list[tuple[int, str, float, float]] = field(default_factory=list)
    taps_lost: int = 0  # the agent said "offline and NOT recorded" (queue-unavailable)
    purchases: dict[str, str] = field(default_factory=dict)  # event id -> customer id
    purchases_queued: int = 0
    redemptions: dict[str, str] = field(default_factory=dict)  # accepted (201)
    redemptions_refused: dict[str, str] = field(default_factory=dict)  # event id -> problem
    refunds: set[str] = field(default_factory=set)
    refunds_refused: dict[str, str] = field(default_factory=dict)
    retries: int = 0  # the same event id posted again after no answer (POS behaviour)
    replayed: int = 0  # answers the service marked Idempotent-Replayed
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # unexpected 4xx
    queued_taps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> dict[str, int]:
        return {"taps": len(self.taps), "purchases": len(self.purchases),
                "redemptions": len(self.redemptions),
                "redemptions_refused": len(self.redemptions_refused),
                "refunds": len(self.refunds), "queued": self.queued_taps + self.purchases_queued,
                "retries": self.retries, "replayed": self.replayed}


class Till(threading.Thread):
    """One simulated till: a reader and a point of sale in front of one agent."""

    def __init__(self, run: FaultRun, index: int, stop: threading.Event) -> None:
        super().__init__(name=f"till {index}", daemon=True)
        self.run_, self.index, self.stop = run, index, stop
        self.agent = run.agents[index]
        self.rng = random.Random(index)
        self.errors: list[str] = []

    # -- helpers
    def _agent_get(self, path: str) -> dict | None:
        try:
            return requests.get(f"{self.agent['url']}{path}", timeout=5).json()
        except (requests.RequestException, ValueError):
            return None

    def tap(self, card_url: str) -> None:
        ledger = self.run_.ledger
        before = self._agent_get("/last")
        if before is None:
            return  # the agent is down: nobody can tap
        presented = time.time()  # (the tap's tapped_at is between these two)
        try:
            r = requests.post(f"{self.agent['url']}/simulate", json={"url": card_url}, timeout=5)
        except requests.RequestException:
            return  # the card was not read
        if r.status_code != 202:
            return
        unseen = (self.index, card_url, presented, time.time())
        mark = (before.get("seq"), before.get("event_id"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            last = self._agent_get("/last")
            if last is None:  # the agent died: the tap is in its outbox or in the database
                with ledger.lock:
                    ledger.taps_unknown += 1
                    ledger.taps_unseen.append(unseen)
                return
            if (last.get("seq"), last.get("event_id")) != mark and last.get("seq"):
                with ledger.lock:
                    if last["ok"] or last["queued"]:
                        ledger.taps.add(last["event_id"])
                        ledger.queued_taps += bool(last["queued"])
                    elif (last.get("error") or {}).get("type") == "queue-unavailable":
                        ledger.taps_lost += 1
                    else:
                        ledger.refused.append(("tap", last.get("event_id") or "",
                                               json.dumps(last.get("error"))))
                return
            time.sleep(0.05)
        with ledger.lock:
            ledger.taps_unknown += 1
            ledger.taps_unseen.append(unseen)

    def purchase(self, customer_id: str) -> None:
        """A sale through the agent; retried with the same event id until it has an answer."""
        ledger = self.run_.ledger
        event_id = str(uuid.uuid4())
        price = self.rng.choice(["4.50", "12.50", "31.00", "75.00"])
        quantity = self.rng.choice([1, 1, 2])
        total = f"{float(price) * quantity:.2f}"
        body = {"event_id": event_id, "customer_id": customer_id, "currency": "EUR",
                "total": total, "receipt": f"T{self.index}-{event_id[:8]}",
                "lines": [{"sku": "TEA-1", "name": "Tea", "quantity": str(quantity),
                           "unit_price": price}]}
        for attempt in range(400):
            if attempt:
                with ledger.lock:
                    ledger.retries += 1
                time.sleep(0.25)
            try:
                r = requests.post(f"{self.agent['url']}/purchases", json=body, timeout=15)
            except requests.RequestException:
                continue  # no answer: the agent may have it, post it again
            if r.status_code in (201, 202):
                with ledger.lock:
                    ledger.purchases[event_id] = customer_id
                    ledger.purchases_queued += r.status_code == 202
                return
            if r.status_code == 503:  # agent-starting: nothing recorded, try again
                continue
            with ledger.lock:
                ledger.refused.append(("purchase", event_id, r.text[:300]))
            return
        self.errors.append(f"purchase {event_id} never answered")

    def _direct(self, path: str, body: dict, kind: str) -> tuple[int, dict]:
        """POST to the service with the till's key until it answers (same event id)."""
        ledger = self.run_.ledger
        headers = {"Authorization": f"Bearer {self.agent['key']}"}
        for attempt in range(400):
            if attempt:
                with ledger.lock:
                    ledger.retries += 1
                time.sleep(0.25)
            try:
                r = requests.post(f"{self.run_.url}/api/v1{path}", json=body, headers=headers,
                                  timeout=10)
            except requests.RequestException:
                continue
            if r.status_code >= 500:
                continue  # 503 while the database is down: nothing was written
            if r.headers.get("Idempotent-Replayed") == "true":
                with ledger.lock:
                    ledger.replayed += 1
            try:
                return r.status_code, r.json()
            except ValueError:
                return r.status_code, {"raw": r.text[:300]}
        self.errors.append(f"{kind} {body['event_id']} never answered")
        return 0, {}

    def redeem(self, customer_id: str) -> None:
        ledger = self.run_.ledger
        event_id = str(uuid.uuid4())
        status, answer = self._direct("/redemptions", {"event_id": event_id, "reward": "COFFEE",
                                                       "customer_id": customer_id}, "redemption")
        with ledger.lock:
            if status == 201:
                ledger.redemptions[event_id] = customer_id
            elif status == 409 and answer.get("type", "").endswith("/insufficient-points"):
                ledger.redemptions_refused[event_id] = "insufficient-points"
            elif status:
                ledger.refused.append(("redemption", event_id, json.dumps(answer)[:300]))

    def refund(self) -> None:
        ledger = self.run_.ledger
        with ledger.lock:
            if not ledger.purchases:
                return
            purchase = self.rng.choice(sorted(ledger.purchases))
        event_id = str(uuid.uuid4())
        status, answer = self._direct("/refunds", {"event_id": event_id,
                                                   "purchase_event_id": purchase}, "refund")
        slug = str(answer.get("type", "")).rsplit("/", 1)[-1]
        with ledger.lock:
            if status == 201:
                ledger.refunds.add(event_id)
            elif status in (404, 409, 422) and slug in {
                    "purchase-not-found", "already-refunded", "nothing-to-refund",
                    "refund-exceeds-purchase"}:
                # still in an outbox, or refunded already by another till: refused, nothing
                ledger.refunds_refused[event_id] = slug
            elif status:
                ledger.refused.append(("refund", event_id, json.dumps(answer)[:300]))

    def run(self) -> None:
        customers = self.run_.customers
        while not self.stop.is_set():
            customer_id, card_url = self.rng.choice(customers)
            roll = self.rng.random()
            try:
                if roll < 0.35:
                    self.tap(card_url)
                elif roll < 0.80:
                    self.purchase(customer_id)
                elif roll < 0.95:
                    self.redeem(customer_id)
                else:
                    self.refund()
            except Exception as exc:  # noqa: BLE001 - reported, the till goes on
                self.errors.append(f"{exc.__class__.__name__}: {exc}")
            self.stop.wait(self.rng.uniform(0.2, 0.6))


# --------------------------------------------------------------------------- the run


@dataclass
class Fault:
    name: str
    at: float  # seconds since the start of the run
    recovered_after: float | None = None  # seconds until every till reached the service
    restart: float = 0.0  # seconds the restarted process took to answer its health check


class FaultRun:
    """Set up the system, run the tills for ``seconds`` with faults on a schedule, verify."""

    def __init__(self, workdir: Path, seconds: float, tills: int = TILLS) -> None:
        self.workdir = workdir
        self.seconds = seconds
        self.tills = tills
        self.ledger = Ledger()
        self.faults: list[Fault] = []
        self.agents: list[dict] = []
        self.customers: list[tuple[str, str]] = []
        self.services: dict[str, Service] = {}
        self.pg: PgCluster | None = None
        self.partition: Partition | None = None
        self.t0 = 0.0
        self.drain_seconds = 0.0

    # -- set-up
    def setup(self) -> None:
        from sqlalchemy.orm import Session

        from server import create_app
        from server.cli import add_device
        from server.migrate import upgrade
        from server.stores.models import Store

        self.pg = PgCluster().start()
        for name in ("faults_main", "faults_vault"):
            self.pg.admin(f'CREATE DATABASE "{name}"')
        instance = self.workdir / "server"
        instance.mkdir(parents=True)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = {"INSTANCE_PATH": str(instance), "DATABASE_URL": self.pg.url + "faults_main",
                  "VAULT_URL": self.pg.url + "faults_vault", "CARD_BASE_URL": self.url}
        app = create_app(config)
        try:
            upgrade(app)
            with Session(app.extensions["loyalty.db"].main) as session:
                session.add(Store(code=STORE, name="Fault injection shop"))
                session.commit()
                kiosk = add_device(session, STORE, "kiosk", "faults kiosk")
                keys = [add_device(session, STORE, "till", f"faults till {n}")
                        for n in range(self.tills)]
        finally:
            app.extensions["loyalty.db"].dispose()

        # the service as systemd runs it (loyalty-server.service): gunicorn, 2 workers
        server_env = clean_env(LOYALTY_INSTANCE_PATH=str(instance),
                               LOYALTY_DATABASE_URL=config["DATABASE_URL"],
                               LOYALTY_VAULT_URL=config["VAULT_URL"],
                               LOYALTY_CARD_BASE_URL=self.url,
                               # ten tills tapping a few cards: not clones
                               LOYALTY_CARD_TAP_LIMIT="0")
        self.services["server"] = Service(
            "server", [str(BIN / "gunicorn"), "--no-control-socket", "-w", "2", "-b",
                       f"127.0.0.1:{port}", "server:create_app()"],
            server_env, f"{self.url}/healthz", self.workdir / "server.log")
        self.services["server"].start()
        self.partition = Partition(port)

        for n, key in enumerate(keys):
            folder = self.workdir / f"agent{n}"
            folder.mkdir()
            key_file = folder / "till.key"
            key_file.write_text(key)
            key_file.chmod(0o600)
            agent_port = _free_port()
            # the agent's own defaults (timeout 5 s, backoff 0.5 s to 30 s, heartbeat 30 s),
            # through the relay that can cut the network
            env = clean_env(LOYALTY_AGENT_BIND=f"127.0.0.1:{agent_port}",
                            LOYALTY_READERS="sim:",
                            LOYALTY_SERVER_URL=f"http://127.0.0.1:{self.partition.port}",
                            LOYALTY_DEVICE_KEY_FILE=str(key_file),
                            LOYALTY_INSTANCE_PATH=str(folder))
            url = f"http://127.0.0.1:{agent_port}"
            self.agents.append({"url": url, "key": key, "folder": folder})
            self.services[f"agent{n}"] = Service(
                f"agent{n}", [str(BIN / "gunicorn"), "--no-control-socket", "-c",
                              str(ROOT / "device_drivers" / "agent_gunicorn.py"),
                              "device_drivers.agent:create_app()"],
                env, f"{url}/status", self.workdir / f"agent{n}.log")
        for n in range(self.tills):
            self.services[f"agent{n}"].start()

        # customers and their QR cards, made by the kiosk over HTTP
        headers = {"Authorization": f"Bearer {kiosk}"}
        for n in range(CUSTOMERS):
            r = requests.post(f"{self.url}/api/v1/enrolments", headers=headers, timeout=10,
                              json={"event_id": str(uuid.uuid4()), "first_name": f"Till{n}",
                                    "last_name": "Faults", "language": "en",
                                    "email": f"faults{n}.{uuid.uuid4().hex[:6]}@example.org",
                                    "consents": {"terms": True}, "consent_version": "2026-11"})
            r.raise_for_status()
            customer_id = r.json()["customer_id"]
            r = requests.post(f"{self.url}/api/v1/customers/{customer_id}/cards",
                              headers=headers, timeout=10,
                              json={"event_id": str(uuid.uuid4()), "kind": "qr"})
            r.raise_for_status()
            self.customers.append((customer_id, r.json()["url"]))

    # -- faults
    def schedule(self) -> list[tuple[float, str]]:
        """The faults, spread over the run; each kind at least once, then round again."""
        kinds = ["kill-server", "pg-restart-fast", "kill-agent", "partition-drop-replies",
                 "pg-restart-immediate", "partition-blackhole", "kill-server+agent"]
        count = max(len(kinds), int(self.seconds // 15))
        step = self.seconds / (count + 1)
        return [(step * (i + 1), kinds[i % len(kinds)]) for i in range(count)]

    def _healthy(self) -> bool:
        try:
            if requests.get(f"{self.url}/healthz", timeout=2).status_code != 200:
                return False
        except requests.RequestException:
            return False
        for agent in self.agents:
            try:
                state = requests.get(f"{agent['url']}/queue", timeout=2).json()
            except (requests.RequestException, ValueError):
                return False
            if state.get("online") is not True:
                return False
        return True

    def _recovery(self, started: float, timeout: float = 60) -> float | None:
        while time.monotonic() - started < timeout:
            if self._healthy():
                return time.monotonic() - started
            time.sleep(0.2)
        return None

    def inject(self, kind: str, rng: random.Random) -> None:
        fault = Fault(kind, time.monotonic() - self.t0)
        started = time.monotonic()
        server = self.services["server"]
        if kind == "kill-server":
            server.kill9()
            time.sleep(2)  # the tills queue meanwhile
            fault.restart = server.start()
        elif kind == "pg-restart-fast":
            self.pg.restart("fast")
            fault.restart = time.monotonic() - started
        elif kind == "pg-restart-immediate":
            self.pg.restart("immediate")
            fault.restart = time.monotonic() - started
        elif kind == "kill-agent":
            agent = self.services[f"agent{rng.randrange(self.tills)}"]
            fault.name += f" ({agent.name})"
            agent.kill9()
            time.sleep(1)
            fault.restart = agent.start()  # the same outbox file
        elif kind.startswith("partition-"):
            self.partition.cut(kind.removeprefix("partition-"))
            time.sleep(6)  # longer than the agents' request timeout (5 s)
            self.partition.heal()
        elif kind == "kill-server+agent":
            agent = self.services[f"agent{rng.randrange(self.tills)}"]
            fault.name += f" ({agent.name})"
            server.kill9()
            time.sleep(1)
            agent.kill9()  # with events in its outbox
            time.sleep(1)
            agent.start()
            fault.restart = server.start()
        fault.recovered_after = self._recovery(started)
        self.faults.append(fault)

    # -- the run
    def run(self) -> None:
        stop = threading.Event()
        tills = [Till(self, n, stop) for n in range(self.tills)]
        rng = random.Random(99)
        self.t0 = time.monotonic()
        for till in tills:
            till.start()
        try:
            for at, kind in self.schedule():
                delay = self.t0 + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.inject(kind, rng)
            delay = self.t0 + self.seconds - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        finally:
            stop.set()
            for till in tills:
                till.join(120)
        self.till_errors = [e for till in tills for e in till.errors]
        # every outbox empties by itself once the service answers
        started = time.monotonic()
        while time.monotonic() - started < 120:
            states = [self._agent_queue(a) for a in self.agents]
            if all(s is not None and s["depth"] == 0 for s in states):
                break
            time.sleep(0.2)
        self.drain_seconds = time.monotonic() - started
        self.queues = [self._agent_queue(a) for a in self.agents]

    @staticmethod
    def _agent_queue(agent: dict) -> dict | None:
        try:
            return requests.get(f"{agent['url']}/queue", timeout=5).json()
        except (requests.RequestException, ValueError):
            return None

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        if self.partition is not None:
            self.partition.close()
        if self.pg is not None:
            self.pg.stop()

    # -- what the databases say
    def verify(self) -> list[str]:
        """Every check of the run; the list of what is wrong (empty: all good)."""
        import psycopg

        problems: list[str] = []
        lg = self.ledger
        with psycopg.connect(self.pg.url + "faults_main") as conn:
            def ids(sql: str) -> Counter:
                return Counter(row[0] for row in conn.execute(sql))

            visits = ids("SELECT event_id FROM visits")
            purchases = ids("SELECT event_id FROM purchases")
            redemptions = ids("SELECT event_id FROM redemptions")
            refunds = ids("SELECT event_id FROM refunds")
            for name, found, expected, extra_allowed in (
                    ("visit", visits, lg.taps, lg.taps_unknown),
                    ("purchase", purchases, set(lg.purchases), 0),
                    ("redemption", redemptions, set(lg.redemptions), 0),
                    ("refund", refunds, set(lg.refunds), 0)):
                doubled = [e for e, n in found.items() if n > 1]
                missing = [e for e in expected if found[e] == 0]
                extra = [e for e in found if e not in expected]
                if doubled:
                    problems.append(f"{len(doubled)} {name}(s) recorded twice: {doubled[:3]}")
                if missing:
                    problems.append(f"{len(missing)} {name}(s) missing: {missing[:3]}")
                if len(extra) > extra_allowed:
                    problems.append(f"{len(extra)} {name}(s) nobody was told of: {extra[:3]}")
            problems += self._unseen_taps(conn, visits)
            refused = set(lg.redemptions_refused) & set(redemptions)
            if refused:
                problems.append(f"{len(refused)} refused redemption(s) in the database")
            refused = set(lg.refunds_refused) & set(refunds)
            if refused:
                problems.append(f"{len(refused)} refused refund(s) in the database")

            for customer_id, points, total in conn.execute(
                    "SELECT c.id, c.points, coalesce(sum(l.delta), 0) FROM customers c "
                    "LEFT JOIN points_ledger l ON l.customer_id = c.id GROUP BY c.id"):
                if points != total:
                    problems.append(f"{customer_id}: balance {points} != ledger {total}")
                if points < 0:
                    problems.append(f"{customer_id}: negative balance {points}")
            # the ledger in the order it was written (its id, taken under the customer's row
            # lock) never goes below zero: no redemption spent more than the balance
            for (customer_id, lowest) in conn.execute(
                    "SELECT customer_id, min(running) FROM (SELECT customer_id, sum(delta) "
                    "OVER (PARTITION BY customer_id ORDER BY id) AS running "
                    "FROM points_ledger) s GROUP BY customer_id"):
                if lowest < 0:
                    problems.append(f"{customer_id}: the ledger went to {lowest}")
            for (customer_id, spent, ledgered) in conn.execute(
                    "SELECT r.customer_id, sum(r.points), (SELECT -sum(delta) FROM "
                    "points_ledger l WHERE l.redemption_id IN (SELECT id FROM redemptions r2 "
                    "WHERE r2.customer_id = r.customer_id) AND l.kind = 'redeem') "
                    "FROM redemptions r GROUP BY r.customer_id"):
                if spent != ledgered:
                    problems.append(f"{customer_id}: redemptions {spent} != ledger {ledgered}")

        for n, state in enumerate(self.queues):
            if state is None:
                problems.append(f"agent{n} does not answer at the end")
            elif state["depth"] or state["failed"]:
                problems.append(f"agent{n}: outbox not empty: depth {state['depth']}, "
                                f"refused {state['failed']}")
        if lg.refused:
            problems.append(f"{len(lg.refused)} event(s) refused: {lg.refused[:3]}")
        if lg.taps_lost:
            problems.append(f"{lg.taps_lost} tap(s) the agent could not record")
        if self.till_errors:
            problems.append(f"tills: {self.till_errors[:5]}")
        for fault in self.faults:
            if fault.recovered_after is None:
                problems.append(f"{fault.name} at {fault.at:.0f} s: no recovery in 60 s")
        for name, bad in self.tracebacks().items():
            problems.append(f"{name}.log: {len(bad)} unexpected traceback(s): {bad[:2]}")
        other = {k: v for k, v in self.database_errors().items() if k not in LOST_CONNECTION}
        if other:
            problems.append(f"server.log: database errors other than a lost connection: {other}"
                            + self.pg.deadlocks())
        return problems

    def _unseen_taps(self, conn, visits: Counter) -> list[str]:
        """Every tap whose outcome its till never saw (its agent was killed) is in the
        database all the same: the agent writes a tap in its outbox before it sends it, so
        a tap on the wire when the agent dies is sent again when it starts. Each such tap is
        matched to one visit nobody was told of: the same till's device, the same customer,
        tapped while the till was presenting the card."""
        from datetime import UTC, datetime

        from server.devices.auth import hash_key

        devices = {row[1]: row[0] for row in conn.execute("SELECT id, key_hash FROM devices")}
        customer_of = {url: customer_id for customer_id, url in self.customers}
        told = self.ledger.taps
        free = [(row[0], row[1], row[2], row[3]) for row in conn.execute(
            "SELECT event_id, device_id, customer_id, tapped_at FROM visits")
            if row[0] not in told and visits[row[0]] == 1]
        lost = []
        for till, url, presented, taken in self.ledger.taps_unseen:
            device = devices.get(hash_key(self.agents[till]["key"]))
            low = datetime.fromtimestamp(presented - 1, UTC)
            high = datetime.fromtimestamp(taken + 1, UTC)
            match = next((v for v in free if v[1] == device and v[2] == customer_of[url]
                          and v[3] is not None and low <= v[3] <= high), None)
            if match is None:
                lost.append(f"till {till} at {datetime.fromtimestamp(presented, UTC):%H:%M:%S.%f}")
            else:
                free.remove(match)
        return [f"{len(lost)} tap(s) lost when their agent was killed: {lost[:3]}"] if lost \
            else []

    def _log(self, name: str) -> str:
        log = self.services[name].log
        return log.read_text(errors="replace") if log.exists() else ""

    def database_errors(self) -> Counter:
        """The service's one-line "database unavailable" errors, by exception class."""
        return Counter(re.findall(r"database unavailable: (\w+)", self._log("server")))

    def tracebacks(self, expected: bool = False) -> dict[str, list[str]]:
        """Tracebacks in the logs that are not a database connection lost during a fault
        (with ``expected``: only those that are)."""
        found: dict[str, list[str]] = {}
        for name in self.services:
            bad = []
            for block in re.split(r"(?=Traceback \(most recent call last\))",
                                  self._log(name))[1:]:
                lines = [ln for ln in block.splitlines()[1:] if ln and not ln.startswith(" ")]
                ending = lines[0] if lines else block[:200]
                lost = name == "server" and bool(EXPECTED_ERRORS.search(ending))
                if lost != expected:
                    continue
                bad.append(ending[:300])
            if bad:
                found[name] = bad
        return found

    def summary(self) -> str:
        lg = self.ledger.count()
        lines = [f"fault injection: {self.seconds:.0f} s, {self.tills} tills, "
                 f"{len(self.customers)} customers",
                 f"  events recorded: {lg['taps']} taps, {lg['purchases']} purchases, "
                 f"{lg['redemptions']} redemptions (+{lg['redemptions_refused']} refused for "
                 f"insufficient points), {lg['refunds']} refunds",
                 f"  queued in an outbox and replayed: {lg['queued']}; posted again by a till "
                 f"after no answer: {lg['retries']}; answered as replays: {lg['replayed']}; "
                 f"taps whose outcome the till never saw (agent killed): "
                 f"{self.ledger.taps_unknown}",
                 f"  outboxes drained {self.drain_seconds:.1f} s after the tills stopped",
                 f"  service log: {sum(self.database_errors().values())} requests answered 503 "
                 f"while the database was away ({dict(self.database_errors())}); tracebacks of "
                 f"a lost connection: {sum(map(len, self.tracebacks(expected=True).values()))}"
                 f", others: {sum(map(len, self.tracebacks().values()))}",
                 f"  faults ({len(self.faults)}):"]
        for fault in self.faults:
            rec = (f"recovered in {fault.recovered_after:.1f} s"
                   if fault.recovered_after is not None else "NOT recovered")
            lines.append(f"    {fault.at:6.1f} s  {fault.name:<32} back up in "
                         f"{fault.restart:4.1f} s, {rec}")
        return "\n".join(lines)
