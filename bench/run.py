"""The benchmark suite (``make bench``): the numbers of DESIGN.md "Numbers to reach", in one run.

    python bench/run.py            # or: make bench

On SQLite and PostgreSQL, with a generated chain (``bench/generate.py``; cached under
``bench/data/`` by scale and migration heads, so a second run does not generate again):

- tap throughput and p50/p99 latency at 8 connections (``wrk`` and a Lua script sending real
  tap bodies with the tills' real keys and distinct card URLs) against the service under
  gunicorn as ``make run`` and systemd start it, and against a bare Flask JSON endpoint under
  the same gunicorn configuration; their ratio;
- report timings (``bench/reports.py``, when it exists);
- the till agent's overhead per tap and its offline-queue replay rate (``bench/agent_probe.py``:
  the real agent, a simulated reader);
- the kiosk's issue time from "confirm" to card written and printed (the real kiosk under
  gunicorn, the simulated writer and a file printer);
- RSS per process: a service worker after the load, the kiosk, the agent.

Environment: ``BENCH_CUSTOMERS`` (1000000), ``BENCH_PURCHASES`` (10000000), ``BENCH_BACKENDS``
(``sqlite,postgresql``), ``BENCH_DURATION`` (seconds of each wrk run, 10),
``BENCH_CONNECTIONS`` (8), ``BENCH_PG_URL`` (an existing PostgreSQL server, e.g.
``postgresql://postgres@127.0.0.1:5432/``; default: a private cluster in ``bench/data/pg``),
``BENCH_STEPS`` (``taps,reports,agent,kiosk``: a part measured again alone).
The results are printed and written to ``bench/data/results-<time>.json``, after each step:
a run that fails or is stopped keeps what it measured. A backend whose data set cannot be
had (its server down, its generation failed) is an error of that backend, not of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / "data"
BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", 1_000_000))
PURCHASES = int(os.environ.get("BENCH_PURCHASES", 10_000_000))
BACKENDS = [b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")
            if b.strip()]
STEPS = [s.strip() for s in os.environ.get("BENCH_STEPS", "taps,reports,agent,kiosk").split(",")
         if s.strip()]
DURATION = int(os.environ.get("BENCH_DURATION", 10))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", 8))
CARDS_IN_SCRIPT = 50_000  # distinct cards the wrk script taps (each card at one till)
# the service as `make run` and systemd/loyalty-server.service start it
GUNICORN = [str(BIN / "gunicorn"), "--no-control-socket", "-w", "2"]
TARGETS = {"ratio": {"sqlite": 0.7, "postgresql": 0.5}, "p99_ms": 10.0,
           "agent_overhead_ms": 5.0, "replay_per_s": 1000.0, "kiosk_s": 2.0,
           "reports_s": 5.0, "server_rss_mb": 150.0, "kiosk_rss_mb": 80.0,
           "agent_rss_mb": 80.0}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process ended with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout} s")
        time.sleep(0.2)


# --------------------------------------------------------------------------- memory


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_rss(master: int) -> float:
    """The largest RSS among a gunicorn master's workers (or the master without workers)."""
    workers = children(master)
    return max((rss_mb(p) for p in workers), default=rss_mb(master))


@contextmanager
def gunicorn(app: str, env: dict, args: list[str] | None = None, health: str = "/healthz"):
    """``app`` under gunicorn on a free port; yields ``(base url, master pid)``."""
    port = free_port()
    cmd = [*(args or GUNICORN), "-b", f"127.0.0.1:{port}", app]
    fd, log_path = tempfile.mkstemp(prefix="bench-gunicorn-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + health, proc=proc)
            yield url, proc.pid
        except Exception:
            log.flush()
            say(Path(log_path).read_text()[-3000:])
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.unlink(log_path)


# --------------------------------------------------------------------------- data sets


def migration_heads() -> str:
    from alembic.script import ScriptDirectory

    from server.migrate import DATABASES, alembic_config

    return "-".join(ScriptDirectory.from_config(alembic_config(name)).get_current_head()
                    for name in DATABASES)


@dataclass
class Dataset:
    backend: str
    urls: dict[str, str]
    instance: Path
    info: dict

    @property
    def env(self) -> dict[str, str]:
        return {"LOYALTY_DATABASE_URL": self.urls["DATABASE_URL"],
                "LOYALTY_VAULT_URL": self.urls["VAULT_URL"],
                "LOYALTY_INSTANCE_PATH": str(self.instance),
                "LOYALTY_CARD_BASE_URL": "https://shop.example", "LOYALTY_LOG_LEVEL": "WARNING",
                # wrk is a whole shop's tills at once: the per-till limit (600 a minute) is
                # kept in the path, checked and counted, but set above what wrk can send
                "LOYALTY_RATELIMIT_TAPS": "100000000/minute"}


class PgCluster:
    """A PostgreSQL cluster kept in ``bench/data/pg`` (its databases are the cache)."""

    def __init__(self) -> None:
        self.url = os.environ.get("BENCH_PG_URL", "")
        self.proc_dir: Path | None = None

    @staticmethod
    def _bindir() -> Path:
        import glob

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                       key=lambda p: int(re.findall(r"\d+", p)[0]))
        if not found:
            raise SystemExit("PostgreSQL is not installed (scripts/sysdeps.sh test)")
        return Path(found[-1]).parent

    @staticmethod
    def _as_pg(cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> str:
        if self.url:
            return self.url
        bindir = self._bindir()
        home = DATA / "pg"
        data = home / "data"
        run = {"check": True, "capture_output": True, "text": True}
        if not (data / "PG_VERSION").exists():
            home.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(home, "postgres", "postgres")
            subprocess.run(self._as_pg([str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                                        "-U", "postgres", "-E", "UTF8", "--no-sync"]), **run)
        port = free_port()
        # durable enough for a benchmark, not for data: the data sets can be made again
        options = (f"-k {home} -h 127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=100 -c shared_buffers=512MB "
                   "-c maintenance_work_mem=512MB -c max_wal_size=4GB")
        subprocess.run(self._as_pg([str(bindir / "pg_ctl"), "-D", str(data), "-l",
                                    str(home / "server.log"), "-w", "-t", "120", "-o", options,
                                    "start"]), **run)
        self.proc_dir = data
        self.url = f"postgresql://postgres@127.0.0.1:{port}/"
        return self.url

    def stop(self) -> None:
        if self.proc_dir is not None:
            subprocess.run(self._as_pg([str(self._bindir() / "pg_ctl"), "-D", str(self.proc_dir),
                                        "-m", "fast", "-w", "stop"]), capture_output=True)
            self.proc_dir = None

    def databases(self) -> set[str]:
        import psycopg

        with psycopg.connect(self.url + "postgres") as conn:
            return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}

    def admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url + "postgres", autocommit=True) as conn:
            conn.execute(statement)


def dataset(backend: str, pg: PgCluster) -> Dataset:
    """The generated data set of this scale and schema, made once and kept in bench/data."""
    key = f"{CUSTOMERS}-{PURCHASES}-{migration_heads()}"
    home = DATA / f"{backend}-{key}"
    instance = home / "instance"
    if backend == "sqlite":
        urls = {"DATABASE_URL": f"sqlite:///{home / 'main.db'}",
                "VAULT_URL": f"sqlite:///{home / 'vault.db'}"}
        ready = (instance / "bench.json").exists()
    else:
        base = pg.start()
        stem = "bench_" + hashlib.sha256(key.encode()).hexdigest()[:12]
        urls = {"DATABASE_URL": f"{base}{stem}_main", "VAULT_URL": f"{base}{stem}_vault"}
        ready = (instance / "bench.json").exists() and f"{stem}_main" in pg.databases()
    if not ready:
        say(f"generating the {backend} data set: {CUSTOMERS:,} customers, {PURCHASES:,} "
            f"purchases (cached in {home.relative_to(ROOT)})")
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        if backend == "postgresql":
            for url in urls.values():
                name = url.rsplit("/", 1)[1]
                pg.admin(f'DROP DATABASE IF EXISTS "{name}"')
                pg.admin(f'CREATE DATABASE "{name}"')
        subprocess.run([sys.executable, str(BENCH / "generate.py"), "--database-url",
                        urls["DATABASE_URL"], "--vault-url", urls["VAULT_URL"], "--customers",
                        str(CUSTOMERS), "--purchases", str(PURCHASES), "--instance",
                        str(instance)], cwd=ROOT, check=True)
    info = json.loads((instance / "bench.json").read_text())
    return Dataset(backend, urls, instance, info)


def active_cards(ds: Dataset, limit: int) -> list[tuple[str, str]]:
    """``(card URL, customer id)`` of up to ``limit`` active cards, spread over customers."""
    from sqlalchemy import text

    from server.cards import token
    from server.cards.keys import load_keyring
    from server.db import make_engine

    ring = load_keyring(str(ds.instance / "card-keys.json"))
    engine = make_engine(ds.urls["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            # card ids are random: the first ones by id are a sample of every kind of customer
            rows = conn.execute(text(
                "SELECT id, generation, key_id, customer_id FROM cards WHERE status = 'active' "
                "AND sun = :f ORDER BY id LIMIT :n"), {"f": False, "n": limit}).all()
    finally:
        engine.dispose()
    return [(f"https://shop.example/c/"
             f"{token.encode(r.key_id, ring.keys[r.key_id], bytes.fromhex(r.id), r.generation)}",
             r.customer_id) for r in rows]


AGENT_CARDS = 1500


def split_cards(ds: Dataset) -> tuple[list, list]:
    """Cards for the wrk runs and other cards, never tapped by them, for the agent."""
    cards = active_cards(ds, CARDS_IN_SCRIPT + AGENT_CARDS)
    keep = min(AGENT_CARDS, len(cards) // 2)  # a tiny data set: half and half
    return cards[:len(cards) - keep], cards[len(cards) - keep:]


# --------------------------------------------------------------------------- wrk


WRK_SCRIPT = r"""
-- real tap bodies: each card at its own till, a fresh event id per request
local cards = {%(cards)s}
local keys = {%(keys)s}
local counter = 0
local prefix = ""
function setup(thread)
  thread:set("tid", tostring(math.random(0, 2147483647)))
end
function init(args)
  math.randomseed(tonumber(tid) + os.time())
  prefix = string.format("%%08x", math.random(0, 2147483647))
end
function request()
  counter = counter + 1
  local i = math.random(1, #cards)
  local card = cards[i]
  local body = string.format(
    '{"event_id":"%%s-%%04x-4%%03x-8%%03x-%%012d","url":"%%s","reader":"bench"}',
    prefix, math.random(0, 65535), math.random(0, 4095), math.random(0, 4095), counter,
    card[1])
  return wrk.format("POST", "/api/v1/taps", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. keys[card[2]]}, body)
end
local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  io.write("BENCH-LATENCY")
  for _, p in pairs({50, 90, 99, 99.9}) do
    io.write(string.format(" p%%s=%%d", p, latency:percentile(p)))
  end
  io.write(string.format(" mean=%%d max=%%d\n", latency.mean, latency.max))
end
"""


def wrk_script(cards: list[tuple[str, str]], tills: list[dict]) -> Path:
    keys = ", ".join(f'"{t["key"]}"' for t in tills)
    rows = ", ".join(f'{{"{url}", {1 + i % len(tills)}}}' for i, (url, _c) in enumerate(cards))
    path = Path(tempfile.mkstemp(prefix="bench-taps-", suffix=".lua")[1])
    path.write_text(WRK_SCRIPT % {"cards": rows, "keys": keys})
    return path


def run_wrk(url: str, script: Path, duration: int) -> dict:
    """One wrk run: requests/s, latency percentiles (ms) and the non-2xx count."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (scripts/sysdeps.sh test installs it)")
    out = subprocess.run(["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{duration}s",
                          "--timeout", "5s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = dict(re.findall(r"(p[\d.]+|mean|max)=(\d+)", out.split("BENCH-LATENCY", 1)[1]))
    return {"rps": round(rps, 1), "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else None,
            "p50_ms": int(lat["p50"]) / 1000, "p90_ms": int(lat["p90"]) / 1000,
            "p99_ms": int(lat["p99"]) / 1000, "p99.9_ms": int(lat["p99.9"]) / 1000,
            "mean_ms": round(int(lat["mean"]) / 1000, 2), "max_ms": int(lat["max"]) / 1000}


def tap_bench(ds: Dataset) -> dict:
    """The tap against the service, then the bare endpoint, same gunicorn, same script."""
    cards = split_cards(ds)[0]
    script = wrk_script(cards, ds.info["devices"]["tills"])
    try:
        with gunicorn("server:create_app()", ds.env) as (url, master):
            run_wrk(url, script, 3)  # warm-up: connections, caches, the programme
            tap = run_wrk(url, script, DURATION)
            server_rss = worker_rss(master)
        with gunicorn("bench.bare:create_app()", {}) as (url, _master):
            run_wrk(url, script, 3)
            bare = run_wrk(url, script, DURATION)
    finally:
        script.unlink()
    return {"tap": tap, "bare": bare, "ratio": round(tap["rps"] / bare["rps"], 3),
            "server_worker_rss_mb": round(server_rss, 1), "cards": len(cards)}


# --------------------------------------------------------------------------- the rest


def reports_bench(ds: Dataset) -> dict | None:
    """``bench/reports.py`` (the report timings) when it exists; its JSON or its output."""
    script = BENCH / "reports.py"
    if not script.exists():
        return None
    done = subprocess.run([sys.executable, str(script), "--database-url",
                           ds.urls["DATABASE_URL"], "--vault-url", ds.urls["VAULT_URL"]],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **ds.env})
    text = done.stdout.strip()
    try:
        return {"exit": done.returncode, "result": json.loads(text)}
    except ValueError:
        return {"exit": done.returncode, "output": text[-4000:], "stderr": done.stderr[-2000:]}


def visits_due(ds: Dataset, customer_ids: list[str]) -> int:
    """Move these customers' last counted visit two days back; returns how many rows.

    The replay is to measure what a till's queue holds after an outage: visits that earn
    their points (``visit_points``: the last counted visit ``min_gap_hours`` ago or more).
    On a cached data set, an earlier run tapped the same cards, and its visits would make
    this run's replay earn nothing (four statements fewer a tap, BENCHMARKS.md)."""
    from datetime import timedelta

    from sqlalchemy import update

    from server.customers.models import Customer
    from server.db import make_engine

    engine = make_engine(ds.urls["DATABASE_URL"])
    try:
        with engine.begin() as conn:
            return conn.execute(
                update(Customer.__table__).where(Customer.__table__.c.id.in_(customer_ids))
                .values(last_counted_visit_at=datetime.now(UTC) - timedelta(days=2))).rowcount
    finally:
        engine.dispose()


def agent_bench(ds: Dataset) -> dict:
    """The real agent (``bench/agent_probe.py``) against the service under gunicorn."""
    cards = split_cards(ds)[1]
    visits_due(ds, [customer for _card, customer in cards])
    till = ds.info["devices"]["tills"][0]
    with gunicorn("server:create_app()", ds.env) as (url, _master):
        done = subprocess.run(
            [sys.executable, str(BENCH / "agent_probe.py"), "--server-url", url,
             "--device-key", till["key"]], input=json.dumps([c for c, _ in cards]),
            capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"agent probe failed: {done.stderr[-3000:]}")
        result = json.loads(done.stdout)
        # the agent as systemd runs it, for its memory after some taps
        instance = Path(tempfile.mkdtemp(prefix="bench-agent-"))
        port = free_port()
        env = {"LOYALTY_SERVER_URL": url, "LOYALTY_DEVICE_KEY": till["key"],
               "LOYALTY_READERS": "sim:", "LOYALTY_INSTANCE_PATH": str(instance),
               "LOYALTY_AGENT_BIND": f"127.0.0.1:{port}", "LOYALTY_LOG_LEVEL": "WARNING"}
        args = [str(BIN / "gunicorn"), "--no-control-socket", "-c",
                str(ROOT / "device_drivers" / "agent_gunicorn.py")]
        try:
            with gunicorn("device_drivers.agent:create_app()", env, args, health="/last") \
                    as (agent_url, master):
                for card, _c in cards[:50]:
                    post_json(f"{agent_url}/simulate", {"url": card})
                    time.sleep(0.02)
                time.sleep(1)
                result["agent_rss_mb"] = round(worker_rss(master), 1)
        finally:
            shutil.rmtree(instance, ignore_errors=True)
    return result


def post_json(url: str, body: dict) -> dict:
    answer = requests.post(url, json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()


CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def kiosk_walk(base: str) -> float:
    """One customer through the real kiosk's steps; seconds from "confirm" (the card step's
    Next, which enrols) until the issuing says done (card written by the simulated writer
    and slip printed to the file printer), polling its status without the page's pauses."""
    session = requests.Session()
    token = ""

    def step(method: str, path: str, **data):
        nonlocal token
        if method == "post":
            answer = session.post(base + path, data={"csrf_token": token, **data},
                                  allow_redirects=False, timeout=30)
        else:
            answer = session.get(base + path, allow_redirects=False, timeout=30)
        found = CSRF.search(answer.text)
        if found:
            token = found.group(1)
        if answer.status_code >= 400:
            raise RuntimeError(f"kiosk {method} {path}: {answer.status_code}")
        return answer

    step("get", "/?lang=en")
    step("post", "/begin")
    step("post", "/language", lang="en")
    step("get", "/details")
    step("post", "/details", nav="next", first_name="Élodie", last_name="Durand",
         email=f"elodie.{os.urandom(5).hex()}@example.org", phone="+33612345678")
    step("get", "/consents")
    step("post", "/consents", nav="next", terms="y")
    step("get", "/survey/1")
    step("post", "/survey/1", nav="skip")
    step("get", "/card")
    started = time.perf_counter()
    confirmed = step("post", "/card", nav="next", choice="both")
    if not confirmed.headers.get("Location", "").startswith("/issue"):
        raise RuntimeError(f"the card step did not enrol: {confirmed.status_code}")
    step("get", "/issue/")
    while True:
        state = session.get(base + "/issue/status", timeout=30).json()
        if state["state"] == "done":
            return time.perf_counter() - started
        if state.get("next") or time.perf_counter() - started > 60:
            raise RuntimeError(f"the issuing stopped: {state}")
        time.sleep(0.005)


def kiosk_bench(ds: Dataset) -> dict:
    """The real kiosk under gunicorn (as systemd starts it), the simulated writer and a file
    printer, against the service: issue time and the kiosk's memory."""
    kiosk = ds.info["devices"]["kiosks"][0]
    instance = Path(tempfile.mkdtemp(prefix="bench-kiosk-"))
    printed = instance / "printer-output.bin"
    env = {"LOYALTY_DEVICE_KEY": kiosk["key"], "LOYALTY_WRITER": "sim:",
           "LOYALTY_PRINTER": f"file:{printed}", "LOYALTY_INSTANCE_PATH": str(instance),
           "LOYALTY_HEARTBEAT_INTERVAL": "0", "LOYALTY_LOG_LEVEL": "WARNING"}
    args = [str(BIN / "gunicorn"), "--no-control-socket", "-w", "1", "--threads", "4"]
    try:
        with gunicorn("server:create_app()", ds.env) as (url, _master):
            env["LOYALTY_SERVER_URL"] = url
            with gunicorn("kiosk_app:create_app()", env, args) as (kiosk_url, master):
                kiosk_walk(kiosk_url)  # warm: connections, templates, the printer
                times = [kiosk_walk(kiosk_url) for _ in range(10)]
                rss = worker_rss(master)
        size = printed.stat().st_size if printed.exists() else 0
    finally:
        shutil.rmtree(instance, ignore_errors=True)
    if not size:
        raise RuntimeError("nothing was printed")
    return {"issue_s_p50": round(statistics.median(times), 3),
            "issue_s_max": round(max(times), 3), "issues": len(times),
            "kiosk_rss_mb": round(rss, 1)}


# --------------------------------------------------------------------------- the report


def machine() -> dict:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    cpu = first(["lscpu"])
    model = re.search(r"Model name:\s*(.*)", cpu)
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return {"cpu": model.group(1) if model else "", "cpus": os.cpu_count(),
            "ram_gb": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
            "load": os.getloadavg(), "python": sys.version.split()[0],
            "wrk": first(["wrk", "-v"]).splitlines()[0] if shutil.which("wrk") else "",
            "postgresql": first(["sh", "-c", "ls /usr/lib/postgresql | sort -n | tail -1"]),
            "sqlite": __import__("sqlite3").sqlite_version}


def verdict(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def summary(results: dict) -> str:
    lines = [f"make bench: {CUSTOMERS:,} customers, {PURCHASES:,} purchases; {CONNECTIONS} "
             f"connections, {DURATION} s per run; load average before "
             f"{results['machine']['load'][0]:.1f}", ""]
    for backend, res in results["backends"].items():
        t = res.get("taps")
        if t:
            target = TARGETS["ratio"][backend]
            lines.append(f"[{backend}] tap     {t['tap']['rps']:8.0f} req/s  p50 "
                         f"{t['tap']['p50_ms']:6.2f} ms  p99 {t['tap']['p99_ms']:6.2f} ms  "
                         f"non-2xx {t['tap']['non_2xx']}")
            lines.append(f"[{backend}] bare    {t['bare']['rps']:8.0f} req/s  p50 "
                         f"{t['bare']['p50_ms']:6.2f} ms  p99 {t['bare']['p99_ms']:6.2f} ms")
            lines.append(f"[{backend}] {verdict(t['ratio'] >= target)} ratio {t['ratio']:.2f} "
                         f"(target >= {target})   {verdict(t['tap']['p99_ms'] < 10)} p99 "
                         f"{t['tap']['p99_ms']:.2f} ms (target < 10)")
            lines.append(f"[{backend}] {verdict(t['server_worker_rss_mb'] < 150)} server worker "
                         f"RSS {t['server_worker_rss_mb']:.0f} MB (target < 150)")
        if "reports" in res:
            rep = res["reports"]
            lines.append(f"[{backend}] reports: " + ("bench/reports.py is not there yet"
                                                     if rep is None else json.dumps(rep)[:800]))
        a = res.get("agent")
        if a:
            lines.append(f"[{backend}] {verdict(a['overhead_ms'] < 5)} agent overhead "
                         f"{a['overhead_ms']:.2f} ms per tap (median; target < 5)   "
                         f"{verdict(a['replay_per_s'] > 1000)} replay {a['replay_per_s']:.0f} "
                         f"events/s (target > 1000)   "
                         f"{verdict(a.get('agent_rss_mb', 0) < 80)} RSS "
                         f"{a.get('agent_rss_mb', 0):.0f} MB (target < 80)")
        k = res.get("kiosk")
        if k:
            lines.append(f"[{backend}] {verdict(k['issue_s_p50'] < 2)} kiosk issue "
                         f"{k['issue_s_p50']:.2f} s median, {k['issue_s_max']:.2f} s max "
                         f"(target < 2)   {verdict(k['kiosk_rss_mb'] < 80)} RSS "
                         f"{k['kiosk_rss_mb']:.0f} MB (target < 80)")
        for name, error in res.get("errors", {}).items():
            lines.append(f"[{backend}] {name} FAILED: {error}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    results = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
               "scale": {"customers": CUSTOMERS, "purchases": PURCHASES},
               "connections": CONNECTIONS, "duration_s": DURATION, "machine": machine(),
               "backends": {}}
    pg = PgCluster()
    out = DATA / f"results-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    steps = {"taps": tap_bench, "reports": reports_bench, "agent": agent_bench,
             "kiosk": kiosk_bench}
    unknown = set(STEPS) - set(steps)
    if unknown:
        raise SystemExit(f"BENCH_STEPS: no step {', '.join(sorted(unknown))}")
    try:
        for backend in BACKENDS:
            res: dict = {"errors": {}}
            results["backends"][backend] = res
            try:
                ds = dataset(backend, pg)
            except Exception as exc:  # this backend's data set: the others still run
                res["errors"]["dataset"] = f"{type(exc).__name__}: {exc}"[:2000]
                out.write_text(json.dumps(results, indent=1))
                continue
            res["dataset_seconds"] = ds.info.get("seconds")
            for name in STEPS:
                say(f"[{backend}] {name} ...")
                try:
                    res[name] = steps[name](ds)
                except Exception as exc:  # one failed part must not hide the others
                    res["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
                out.write_text(json.dumps(results, indent=1))  # kept if the run stops
    finally:
        pg.stop()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    out.write_text(json.dumps(results, indent=1))
    print(summary(results))
    print(f"(all figures: {out.relative_to(ROOT)})")
    return 1 if any(r["errors"] for r in results["backends"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
