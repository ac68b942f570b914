"""Our units under the real systemd (booted in namespaces: tests/support/systemd_boot.py).

``test_systemd_units.py`` reads the units and has ``systemd-analyze`` judge them. Here systemd
runs them as they are in ``systemd/``:

- ``loyalty-server.service``: its ``ExecStartPre`` migrates the databases as the ``loyalty``
  user into the ``StateDirectory``, gunicorn tells systemd it is ready (``Type=notify``), and
  the API answers. What the hardening promises is then read from the running processes
  themselves: their user, no new privileges, a seccomp filter, no capabilities, a read-only
  system, a private ``/tmp``.
- the server's jobs (value snapshot, retention and audit check) and their timers;
- ``loyalty-agent.service`` with a till's key: it reaches the service, which records its
  heartbeat.

Test drop-ins change what this machine needs changed, nothing of the confinement:

- its Python may live under /root, which ``ProtectHome=yes`` hides, and the checkout under
  /tmp, which ``PrivateTmp=`` hides (``_machine_dropin``);
- the agent's key: systemd's credentials (``LoadCredential=``) do not work in this boot. The
  service's ``/run/credentials/<unit>`` stays empty and root's, even for a unit with nothing
  but ``User=`` and ``LoadCredential=`` (systemd 252 in a PID namespace, reason not found).
  So the drop-in gives the agent its key as a file its user may read
  (``LOYALTY_DEVICE_KEY_FILE``, which the unit sets to the credential), and
  ``LoadCredential=`` is not what this test proves.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.support.systemd_boot import SystemdBoot, unavailable

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


def _machine_dropin() -> str:
    """What a unit needs changed on this machine, nothing of its confinement:

    - its Python may live under /root (pyenv), which ``ProtectHome=yes`` hides: only that
      directory is brought back, read-only (a Debian install uses /usr/bin/python3); the
      rest of the home directories stays hidden;
    - the checkout may not be at /opt/loyalty (CI clones under /tmp, which ``PrivateTmp=``
      hides): the virtualenv's scripts name the checkout's own path, so that path is
      brought back, read-only (``ProtectSystem=strict`` makes it so anyway)."""
    lines = []
    prefix = Path(sys.base_prefix).resolve()
    if any(prefix.is_relative_to(home) for home in (Path("/root"), Path("/home"))):
        lines += ["ProtectHome=tmpfs", f"BindReadOnlyPaths={prefix}"]
    if str(ROOT) != "/opt/loyalty":
        lines.append(f"BindReadOnlyPaths={ROOT}")
    return "".join(f"{line}\n" for line in lines)


SERVICES = ("loyalty-server", "loyalty-value-refresh", "loyalty-privacy", "loyalty-agent")
TIMERS = ("loyalty-value-refresh", "loyalty-privacy")
TILL_KEY = "/run/loyalty-till.key"


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    units = {}
    for name in SERVICES:
        units[f"{name}.service"] = (ROOT / "systemd" / f"{name}.service").read_text()
        units[f"{name}.service.d/test.conf"] = ("[Service]\nTimeoutStartSec=200\n"
                                                + _machine_dropin())
    for name in TIMERS:
        units[f"{name}.timer"] = (ROOT / "systemd" / f"{name}.timer").read_text()
    # the key made below, as a file (credentials do not work in this boot: see above)
    units["loyalty-agent.service.d/key.conf"] = \
        f"[Service]\nLoadCredential=\nEnvironment=LOYALTY_DEVICE_KEY_FILE={TILL_KEY}\n"
    with SystemdBoot(tmp_path_factory.mktemp("systemd"), ROOT, units,
                     start=("loyalty-server.service",), users=("loyalty", "loyalty-agent"),
                     groups=("loyalty-readers",)) as boot:
        # started at boot; this returns when it is ready (Type=notify) or has failed
        boot.run("systemctl", "start", "loyalty-server.service", check=False, timeout=240)
        yield boot


def _flask(boot: SystemdBoot, *args: str) -> str:
    """A ``flask`` command as the service's user, as an administrator runs one (with this
    machine's Python under /root made readable to that user the way ``_machine_dropin``
    does it for the units: an empty /root with the Python directory mounted back)."""
    prefix = str(Path(sys.base_prefix).resolve())
    home = prefix.split("/")[1]
    script = ("set -e\n"
              f'if [ "{home}" = root ] || [ "{home}" = home ]; then\n'
              f"  mkdir -p /run/py && mount --bind {prefix} /run/py\n"
              f"  mount -t tmpfs tmpfs /{home} && mkdir -p {prefix}\n"
              f"  mount --bind /run/py {prefix}\n"
              "fi\n"
              "cd /opt/loyalty\n"
              "exec setpriv --reuid=loyalty --regid=loyalty --init-groups env -i "
              "PATH=/usr/bin:/bin LOYALTY_INSTANCE_PATH=/var/lib/loyalty "
              '/opt/loyalty/.venv/bin/flask --app server "$@"\n')
    return boot.run("unshare", "--mount", "sh", "-c", script, "flask", *args).stdout


def _show(boot: SystemdBoot, unit: str, *props: str) -> dict[str, str]:
    out = boot.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _status(boot: SystemdBoot, pid: int) -> dict[str, str]:
    text = boot.run("cat", f"/proc/{pid}/status").stdout
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


def _mounts(boot: SystemdBoot, pid: int) -> dict[str, set[str]]:
    """Mount point -> its options, as the process sees them (the last mount wins)."""
    mounts = {}
    for line in boot.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines():
        fields = line.split()
        mounts[fields[4]] = set(fields[5].split(","))
    return mounts


def test_the_server_unit_starts_migrates_and_answers(booted):
    state = _show(booted, "loyalty-server.service", "ActiveState", "SubState", "Result",
                  "MainPID", "User")
    journal = booted.run("systemctl", "status", "--no-pager", "loyalty-server.service",
                         check=False).stdout
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), (state, journal)
    health = booted.run("curl", "-sS", "-f", "http://127.0.0.1:8000/healthz")
    assert health.stdout.strip(), health
    # ExecStartPre made the databases in the state directory, the service's user's only
    listing = booted.run("stat", "-c", "%U %a %n", "/var/lib/loyalty",
                         "/var/lib/loyalty/loyalty.db", "/var/lib/loyalty/vault.db"
                         ).stdout.split("\n")
    assert listing[0] == "loyalty 700 /var/lib/loyalty", listing
    assert all(line.split()[:2] == ["loyalty", "600"] for line in listing[1:3]), listing


def test_the_servers_processes_are_confined(booted):
    main = int(_show(booted, "loyalty-server.service", "MainPID")["MainPID"])
    workers = [int(p) for p in booted.run("pgrep", "-P", str(main)).stdout.split()]
    assert len(workers) == 2  # -w 2
    uid = booted.run("id", "-u", "loyalty").stdout.strip()
    for pid in (main, *workers):
        status = _status(booted, pid)
        assert status["Uid"].split()[0] == uid, status["Uid"]
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # a filter (SystemCallFilter=)
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        mounts = _mounts(booted, pid)
        assert "ro" in mounts["/"], mounts["/"]  # ProtectSystem=strict
        assert "rw" in mounts["/var/lib/loyalty"]  # its state directory only
        assert "/tmp" in mounts and "/var/tmp" in mounts  # PrivateTmp=
        assert "ro" in mounts["/proc/sys"]  # ProtectKernelTunables=
    # what the confinement refuses, tried as the service runs: the same namespace and user
    write = booted.run("nsenter", "-t", str(main), "-m", "setpriv", "--reuid=loyalty",
                       "--regid=loyalty", "--clear-groups", "touch", "/opt/loyalty/x",
                       check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write


def test_stopping_the_server_stops_its_workers(booted):
    booted.run("systemctl", "stop", "loyalty-server.service")
    state = _show(booted, "loyalty-server.service", "ActiveState", "Result")
    assert state == {"ActiveState": "inactive", "Result": "success"}, state
    assert booted.run("pgrep", "-u", "loyalty", check=False).stdout == ""
    booted.run("systemctl", "start", "loyalty-server.service")
    assert _show(booted, "loyalty-server.service", "ActiveState")["ActiveState"] == "active"


def test_the_jobs_run_as_the_service_and_their_timers_are_set(booted):
    for name in ("loyalty-value-refresh", "loyalty-privacy"):
        booted.run("systemctl", "start", f"{name}.service")  # oneshot: returns when done
        state = _show(booted, f"{name}.service", "Result", "ExecMainStatus")
        assert state == {"Result": "success", "ExecMainStatus": "0"}, (name, state)
    for name in TIMERS:
        booted.run("systemctl", "start", f"{name}.timer")
        timer = _show(booted, f"{name}.timer", "ActiveState", "NextElapseUSecRealtime")
        assert timer["ActiveState"] == "active" and timer["NextElapseUSecRealtime"], timer
    # the snapshot job wrote what the back office reads, in the service's database
    snapshots = booted.run("sqlite3", "/var/lib/loyalty/loyalty.db",
                           "SELECT count(*) FROM value_snapshots").stdout
    assert int(snapshots) >= 1


def test_the_agent_reaches_the_service_with_its_key(booted):
    _flask(booted, "stores", "add", "--code", "BOOT-01", "--name", "Boot")
    key = _flask(booted, "devices", "add", "--store", "BOOT-01", "--role", "till",
                 "--name", "till 1").strip().splitlines()[-1]
    booted.run("sh", "-c", f"umask 077 && cat > {TILL_KEY} && chown loyalty-agent {TILL_KEY}",
               input=key)
    booted.run("systemctl", "start", "loyalty-agent.service")
    state = _show(booted, "loyalty-agent.service", "ActiveState", "SubState", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert _status(booted, int(state["MainPID"]))["Uid"].split()[0] == \
        booted.run("id", "-u", "loyalty-agent").stdout.strip()
    # its first heartbeat, authenticated with the credential, reaches the service
    deadline = time.monotonic() + 60
    while "seen never" in (listed := _flask(booted, "devices", "list")):
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    assert "till 1" in listed
    # the key is not in the agent's environment or arguments (a file names it)
    pid = state["MainPID"]
    environ = booted.run("cat", f"/proc/{pid}/environ").stdout
    cmdline = booted.run("cat", f"/proc/{pid}/cmdline").stdout
    assert key not in environ and key not in cmdline
