"""A private ``pcscd`` with vsmartcard's ``vpcd`` reader, for tests (no systemd, no hardware).

    with running_pcscd(Path(tmpdir)) as daemon:   # as root
        VpcdCard(VirtualCard(uid, ndef)).insert(daemon.port0)  # card on daemon.reader0

There is one pcscd per machine (its socket path is fixed), so starting ours stops any pcscd
already running; a lock file makes two test runs on one machine take turns instead of
killing each other's daemon. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
RUN_DIR = Path("/run/pcscd")
STALE_FILES = (RUN_DIR / "pcscd.comm", RUN_DIR / "pcscd.pid")
CHANNEL = 0x5A00  # vpcd listens on CHANNEL (slot 0) and CHANNEL + 1: 23040, 23041
LOCK_FILE = Path(tempfile.gettempdir()) / "loyalty-kiosk-pcscd.lock"
PACKAGES = {"pcscd": "pcscd", "vpcd": "vsmartcard-vpcd"}


@dataclass(frozen=True)
class Pcscd:
    """A running pcscd with the two vpcd slots; put a card on one with ``VpcdCard.insert``."""

    process: subprocess.Popen
    conf_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    port0: int = CHANNEL
    port1: int = CHANNEL + 1
    reader0: str = "Virtual PCD 00 00"
    reader1: str = "Virtual PCD 00 01"

    def log(self) -> str:
        """pcscd's log so far."""
        return self.log_path.read_text(errors="replace")


def find_pcscd() -> str | None:
    """The pcscd executable (``/usr/sbin`` is often not on a user's PATH)."""
    return shutil.which(
        "pcscd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    )


def missing_requirements() -> str | None:
    """Why a private pcscd cannot run here (a skip message), or ``None`` when it can."""
    missing = [PACKAGES["pcscd"]] if find_pcscd() is None else []
    if not VPCD_DRIVER.exists():
        missing.append(PACKAGES["vpcd"])
    root = os.geteuid() == 0
    if missing:
        how = (
            "`make test` installs them (scripts/sysdeps.sh test)"
            if root
            else f"as root: apt-get install {' '.join(missing)}"
        )
        return f"PC/SC tests need the Debian packages {', '.join(missing)}: {how}"
    if not root and not os.access(RUN_DIR if RUN_DIR.exists() else RUN_DIR.parent, os.W_OK):
        return f"PC/SC tests start their own pcscd and need root (it owns {RUN_DIR})"
    return None


def write_reader_conf(directory: Path, channel: int = CHANNEL) -> Path:
    """Write a reader.conf.d directory holding only vpcd, on ports ``channel``/``channel+1``.

    (The packaged default, 35963/35964, lies in the ephemeral port range and can collide.)
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vpcd").write_text(
        'FRIENDLYNAME "Virtual PCD"\n'
        f"DEVICENAME /dev/null:0x{channel:04X}\n"
        f"LIBPATH {VPCD_DRIVER}\n"
        f"CHANNELID 0x{channel:04X}\n"
    )
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purpose
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def running_pcscd_pids() -> list[int]:
    """Pids of processes named exactly ``pcscd`` (like ``pgrep -x pcscd``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "pcscd":
                    pids.append(int(entry.name))
    return pids


def stop_running_pcscd(timeout: float = 10.0) -> None:
    """Stop every pcscd on this machine (SIGTERM, then SIGKILL) and remove its stale files."""
    for pid in running_pcscd_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 2.0)
    for path in STALE_FILES:  # a killed pcscd leaves them and the next one refuses to start
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _machine_lock(timeout: float) -> Iterator[None]:
    with open(LOCK_FILE, "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"another test run holds {LOCK_FILE} (its own pcscd) for more than "
                        f"{timeout:.0f} s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _terminate(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    for path in STALE_FILES:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def running_pcscd(
    workdir: Path, ready_timeout: float = 10.0, lock_timeout: float = 300.0
) -> Iterator[Pcscd]:
    """Start ``pcscd -f -i -c workdir/reader.conf.d`` with vpcd; stop it (SIGTERM) on exit.

    Args:
        workdir: a private directory for the reader configuration and ``pcscd.log``.
        ready_timeout: seconds to wait for the log line ``daemon ready``.
        lock_timeout: seconds to wait for another test run's pcscd to finish.

    Yields:
        The running daemon: ports and reader names of its two vpcd slots, its log.

    Raises:
        RuntimeError: pcscd exited or did not get ready in time (the message holds its log).
        TimeoutError: another test run kept the machine's pcscd for ``lock_timeout``.
    """
    executable = find_pcscd()
    if executable is None:
        raise RuntimeError("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
    conf_dir = write_reader_conf(workdir / "reader.conf.d")
    log_path = workdir / "pcscd.log"
    with _machine_lock(lock_timeout):
        stop_running_pcscd()
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [executable, "-f", "-i", "-c", str(conf_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # Ctrl-C in pytest must not kill it before teardown
        try:
            daemon = Pcscd(process=process, conf_dir=conf_dir, log_path=log_path)
            deadline = time.monotonic() + ready_timeout
            while "daemon ready" not in daemon.log():
                if process.poll() is not None or time.monotonic() >= deadline:
                    state = (
                        f"exited with status {process.returncode}"
                        if process.poll() is not None
                        else f"not ready after {ready_timeout:.0f} s"
                    )
                    raise RuntimeError(f"pcscd {state}; its log:\n{daemon.log()}")
                time.sleep(0.02)
            if "Could not initialize connection to virtual ICC" in daemon.log():
                raise RuntimeError(
                    f"vpcd could not listen on ports {daemon.port0}/"
                    f"{daemon.port1} (in use?); pcscd's log:\n{daemon.log()}"
                )
            yield daemon
        finally:
            _terminate(process)
