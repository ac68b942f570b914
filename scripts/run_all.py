"""`make run`: the whole system on one machine, on the embedded defaults.

Applies the migrations, creates the demo store, devices and admin if missing, then starts
the service (gunicorn, :8000), the kiosk (:8080) and the till agent with a simulated reader
(:8765), prints where to go, and stops all three cleanly on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTANCE = Path(os.environ.get("LOYALTY_INSTANCE_PATH", ROOT / "instance")).resolve()


def flask(*args: str, env: dict) -> None:
    subprocess.run([str(BIN / "flask"), "--app", "server", *args], check=True, env=env,
                   cwd=ROOT, stdout=subprocess.DEVNULL)


def key_file(name: str, key: str) -> Path:
    path = INSTANCE / f"{name}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return path


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} did not start (exit {proc.returncode}); see above")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def main() -> int:
    INSTANCE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LOYALTY_INSTANCE_PATH": str(INSTANCE)}
    print("preparing the databases and the demo devices…", flush=True)
    flask("db", "upgrade", env=env)
    flask("demo", "init", env=env)
    creds = json.loads((INSTANCE / "demo-credentials.json").read_text())

    # three gunicorn masters on one machine: gunicorn's control socket path would collide
    gunicorn = [str(BIN / "gunicorn"), "--no-control-socket"]
    services = {
        # no access log: a card page's URL carries the card's token, a bearer credential
        "server": ([*gunicorn, "-w", "2", "-b", "127.0.0.1:8000", "server:create_app()"], {}, "http://127.0.0.1:8000/healthz"),
        "kiosk": ([*gunicorn, "-w", "1", "--threads", "4", "-b", "127.0.0.1:8080",
                   "kiosk_app:create_app()"],
                  {"LOYALTY_DEVICE_KEY_FILE": str(key_file("kiosk", creds["kiosk_key"])),
                   "LOYALTY_PRINTER": f"file:{INSTANCE / 'printer-output.bin'}",
                   "LOYALTY_SHOW_CARD_ON_SCREEN": "1"},
                  "http://127.0.0.1:8080/healthz"),
        "agent": ([*gunicorn, "-c", str(ROOT / "device_drivers" / "agent_gunicorn.py"),
                   "device_drivers.agent:create_app()"],
                  {"LOYALTY_DEVICE_KEY_FILE": str(key_file("till", creds["till_key"])),
                   "LOYALTY_READERS": "sim:"},
                  "http://127.0.0.1:8765/status"),
    }
    procs: dict[str, subprocess.Popen] = {}

    def stop(*_args) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    # Ctrl-C, a closed terminal or a plain kill all stop everything; installed explicitly,
    # since a launcher started from a script may inherit SIGINT as ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    try:
        for name, (cmd, extra, health) in services.items():
            # a session of their own: Ctrl-C reaches only this launcher, which stops them
            # with SIGTERM (gunicorn's threaded workers hang for a while on SIGINT)
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, env={**env, **extra},
                                           start_new_session=True)
            wait_ready(health, procs[name])
        print(f"""
  Loyalty system running (Ctrl-C stops everything):
    kiosk        http://127.0.0.1:8080/      enrol a customer; the card prints to
                                             {INSTANCE / 'printer-output.bin'}
    till         http://127.0.0.1:8765/      paste the card URL shown by the kiosk and tap
    service      http://127.0.0.1:8000/api/v1/openapi.json
    back office  http://127.0.0.1:8000/backoffice/
    admin password and kiosk staff-mode PIN (staff 'admin'):
                 in {INSTANCE / 'demo-credentials.json'}
""", flush=True)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in procs.items() if p.poll() is not None]
        print(f"stopped: {', '.join(dead)} exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
