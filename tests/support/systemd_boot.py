"""systemd as PID 1 of its own namespaces, to run our units under the real service manager.

The machines of the suite do not boot systemd. ``unshare`` gives it new PID, mount, network,
UTS, IPC and cgroup namespaces, and systemd 252 boots in them as a container's init
(``container=other``). It reads units from one directory only (``SYSTEMD_UNIT_PATH``): the
unit under test, test drop-ins, and empty stand-ins for the targets a service's default
dependencies name. Nothing of the distribution's own units runs: ``sysinit.target`` there
starts ``systemd-tmpfiles-setup``, which empties the host's ``/tmp`` (its mount namespace is
private, its files are not), and udev and sysctl, which act on the host's kernel.

The namespace gets its own ``/run``, ``/tmp``, ``/var/tmp``, ``/var/lib`` and ``/opt``
(tmpfs), and its own ``/etc/passwd`` and ``/etc/group`` (the units' users added): nothing is
written to the host's system directories. The repository is mounted at ``/opt/loyalty`` and
stays at its own path too (its virtualenv's scripts name it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

# the targets and slice a service's default dependencies reach, as empty units
_STANDINS = ("sysinit.target", "basic.target", "shutdown.target", "network.target",
             "network-online.target", "multi-user.target", "sockets.target", "timers.target",
             "paths.target", "slices.target", "local-fs.target")

_BOOT = r"""#!/bin/bash
set -euo pipefail
hold=/run/loyalty-boot
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p "$hold/repo"
cp -a "$1/." "$hold/"
mount --bind "$2" "$hold/repo"
for dir in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs "$dir"; done
for dir in /var/lib /opt; do mount -t tmpfs -o mode=0755 tmpfs "$dir"; done
mkdir -p "$2" /opt/loyalty
mount --bind "$hold/repo" "$2"
mount --bind "$hold/repo" /opt/loyalty
mount --bind "$hold/passwd" /etc/passwd
mount --bind "$hold/group" /etc/group
mount -t proc proc /proc
ip link set lo up
# systemd's own log: nowhere by default (LOYALTY_BOOT_LOG_TARGET=kmsg for dmesg)
exec env -i container=other SYSTEMD_UNIT_PATH="$hold/units" \
    /lib/systemd/systemd --system --unit=loyalty-test.target \
    --log-target="${LOYALTY_BOOT_LOG_TARGET:-null}" --log-color=no \
    --log-level="${LOYALTY_BOOT_LOG_LEVEL:-info}"
"""


def unavailable() -> str | None:
    """Why systemd cannot be booted here, or ``None``."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed"
    tried = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc",
                            "--cgroup", "true"], capture_output=True, text=True)
    if tried.returncode:
        return f"this machine refuses new namespaces: {tried.stderr.strip()}"
    return None


class SystemdBoot:
    """``with SystemdBoot(tmp_path, repo, units, start) as boot: boot.run("systemctl", ...)``.

    ``units``: file name -> text (drop-ins as ``name.service.d/file.conf``); ``start``: the
    units started at boot. ``users``: system users to add (each with its own group);
    ``groups``: more groups."""

    def __init__(self, workdir: Path, repo: Path, units: dict[str, str],
                 start: tuple[str, ...], users: tuple[str, ...] = (),
                 groups: tuple[str, ...] = ()) -> None:
        self.workdir, self.repo = workdir, repo.resolve()
        self.units, self.start, self.users, self.groups = units, start, users, groups
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    def _prepare(self) -> Path:
        hold = self.workdir / "hold"
        unit_dir = hold / "units"
        unit_dir.mkdir(parents=True)
        for name in _STANDINS:
            (unit_dir / name).write_text("[Unit]\nDefaultDependencies=no\n")
        (unit_dir / "system.slice").write_text("[Unit]\nDefaultDependencies=no\n")
        # reached once the units are up (or failed): only then is the system "running"
        units = " ".join(self.start)
        (unit_dir / "loyalty-test.target").write_text(
            f"[Unit]\nDefaultDependencies=no\nWants={units}\nAfter={units}\n")
        for name, text in self.units.items():
            (unit_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (unit_dir / name).write_text(text)
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        taken = {int(line.split(":")[2]) for text in (passwd, group)
                 for line in text.splitlines() if line.count(":") >= 3}
        free = (n for n in range(990, 100, -1) if n not in taken)
        for name in self.users:
            number = next(free)
            passwd += f"{name}:x:{number}:{number}::/nonexistent:/usr/sbin/nologin\n"
            group += f"{name}:x:{number}:\n"
        for name in self.groups:
            group += f"{name}:x:{next(free)}:\n"
        (hold / "passwd").write_text(passwd)
        (hold / "group").write_text(group)
        script = self.workdir / "boot.sh"
        script.write_text(_BOOT)
        script.chmod(0o700)
        return hold

    def __enter__(self) -> SystemdBoot:
        hold = self._prepare()
        with open(self.workdir / "boot.out", "wb") as out:  # a pipe nobody reads would fill
            self.proc = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--net", "--uts",
                 "--ipc", "--cgroup", str(self.workdir / "boot.sh"), str(hold), str(self.repo)],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            self._wait_booted()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_booted(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the boot failed: {self.log()[-3000:]}")
            if self.pid is None:
                children = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                                          capture_output=True, text=True).stdout.split()
                self.pid = int(children[0]) if children else None
            if self.pid is not None:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"systemd did not finish booting in {timeout} s (state {state!r})")

    def run(self, *cmd: str, check: bool = True, timeout: float = 120.0,
            input: str | None = None) -> subprocess.CompletedProcess:
        """``cmd`` as root in every namespace of the boot."""
        done = subprocess.run(["nsenter", "-t", str(self.pid), "-a", *cmd], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}): "
                                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done

    def log(self) -> str:
        """What the boot script said (its errors)."""
        return (self.workdir / "boot.out").read_text(errors="replace")

    def __exit__(self, *exc) -> None:
        if self.pid is not None:
            # the namespace's init: every process of the namespace dies with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
