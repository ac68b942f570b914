"""The units in systemd/: what they run exists, they restart, run as their own user, hardened.

The layout is docs/RASPBERRY-PI.md's: the repository at /opt/loyalty with its virtualenv in
/opt/loyalty/.venv (``make install``), so /opt/loyalty/X is checked as X of this checkout.
``systemd-analyze verify`` checks the units as systemd reads them, where it is installed.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS_DIR = ROOT / "systemd"
INSTALL_ROOT = "/opt/loyalty"
GUIDE = ROOT / "docs" / "RASPBERRY-PI.md"
UNITS = sorted(p for p in UNITS_DIR.iterdir() if p.suffix in (".service", ".timer"))
SERVICES = [p for p in UNITS if p.suffix == ".service"]
# binaries from Debian packages that are not on every test machine: the package the guide's
# apt line must install
SYSTEM_BINARIES = {"/usr/bin/cage": "cage", "/usr/bin/chromium": "chromium"}
EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecStopPost")
KIOSK_UNITS = ("loyalty-kiosk.service", "loyalty-kiosk-browser.service")
# what a touch kiosk's Chromium must be told (docs/RASPBERRY-PI.md, issue 6)
KIOSK_FLAGS = (
    "--kiosk", "--noerrdialogs", "--disable-infobars", "--no-first-run", "--disable-translate",
    "--disable-pinch", "--overscroll-history-navigation=0", "--disable-features=TranslateUI",
    "--check-for-update-interval=31536000", "--password-store=basic", "--incognito",
    "--ozone-platform=wayland",
)  # fmt: skip


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Read a unit file as systemd does: sections of (key, value), keys may repeat.

    Comments (``#``, ``;``) and blank lines are skipped; a line ending in ``\\`` goes on with
    the next one.
    """
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}: not a setting: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict, section: str, key: str, default: str | None = None) -> str | None:
    found = values(unit, section, key)
    return found[-1] if found else default


def commands(unit: dict) -> list[list[str]]:
    """Every Exec* command line as argv, without systemd's ``-@+!:`` prefixes."""
    out = []
    for key in EXEC_KEYS:
        for line in values(unit, "Service", key):
            argv = shlex.split(line)
            argv[0] = argv[0].lstrip("-@+!:")
            out.append(argv)
    return out


def in_checkout(path: str) -> Path:
    return ROOT / path[len(INSTALL_ROOT) + 1 :]


def guide_apt_packages() -> set[str]:
    text = GUIDE.read_text().replace("\\\n", " ")
    packages: set[str] = set()
    for line in text.splitlines():
        match = re.search(r"\bapt(?:-get)? install (.*)", line)
        if match:
            packages.update(w for w in match.group(1).split() if not w.startswith("-"))
    return packages


def is_long_running(unit: dict) -> bool:
    return value(unit, "Service", "Type", "simple") != "oneshot"


@pytest.fixture(scope="module")
def units() -> dict[str, dict]:
    return {path.name: parse_unit(path) for path in UNITS}


def test_the_kiosk_units_are_there(units):
    assert set(KIOSK_UNITS) <= set(units)


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_describes_itself_and_is_installable(path):
    unit = parse_unit(path)

    assert value(unit, "Unit", "Description")
    timer_of = value(unit, "Unit", "Description") and path.suffix == ".timer"
    if timer_of:
        target = value(unit, "Timer", "Unit", path.stem + ".service")
        assert (UNITS_DIR / target).exists(), f"{path.name} starts {target}, not in systemd/"
    if is_long_running(unit) or path.suffix == ".timer":
        assert value(unit, "Install", "WantedBy"), f"{path.name} is never started at boot"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_long_running_services_restart_and_run_as_their_own_user(path):
    unit = parse_unit(path)
    user = value(unit, "Service", "User")

    assert user and user not in ("root", "0"), f"{path.name} runs as {user or 'root'}"
    assert value(unit, "Service", "Group") == user
    if is_long_running(unit):
        assert value(unit, "Service", "Restart") in ("on-failure", "always")


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_services_are_hardened(path):
    unit = parse_unit(path)
    setting = {key: v for key, v in unit["Service"]}

    assert setting.get("NoNewPrivileges") == "yes"
    assert setting.get("ProtectSystem") in ("strict", "full")
    assert setting.get("PrivateTmp") == "yes"
    seat_session = "PAMName" in setting  # ProtectHome would hide /run/user (Wayland socket)
    if not seat_session:
        assert setting.get("ProtectHome") == "yes"
        assert setting.get("ProtectSystem") == "strict"
    # devices only for the services that are given some: by group, or by logind's seat
    if not seat_session and "SupplementaryGroups" not in setting:
        assert setting.get("PrivateDevices") == "yes"
    if path.name in KIOSK_UNITS or path.name == "loyalty-agent.service":
        # the device units (on a shop's Pi, next to customers) also keep the kernel closed
        assert "AF_UNIX" in setting.get("RestrictAddressFamilies", "")
        assert "AF_PACKET" not in setting.get("RestrictAddressFamilies", "")
        assert setting.get("ProtectKernelTunables") == "yes"
        assert setting.get("ProtectControlGroups") == "yes"
    if path.name in KIOSK_UNITS:
        assert setting.get("ProtectKernelModules") == "yes"
        assert setting.get("UMask") == "0077"


# what a unit may leave out, and why (the unit file says it again next to its settings)
BROWSER = "loyalty-kiosk-browser.service"
DEVICE_UNITS = ("loyalty-agent.service", "loyalty-kiosk.service", BROWSER)
EXCEPTIONS = {
    # Chromium's sandbox makes user namespaces and filters its own system calls
    "RestrictNamespaces": {BROWSER},
    "SystemCallFilter": {BROWSER},
    # ProtectClock implies DeviceAllow=char-rtc, which closes every other device (readers,
    # printers, the seat's screen)
    "ProtectClock": set(DEVICE_UNITS),
    # the device units open readers and printers; the browser the seat's screen and touch
    "PrivateDevices": set(DEVICE_UNITS),
}


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_services_are_hardened_as_far_as_their_hardware_allows(path):
    unit = parse_unit(path)
    setting = {key: v for key, v in unit["Service"]}

    def wanted(key: str) -> bool:
        return path.name not in EXCEPTIONS.get(key, set())

    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectKernelLogs", "ProtectControlGroups", "ProtectHostname", "LockPersonality",
                "RestrictRealtime", "RestrictSUIDSGID", "RemoveIPC", "ProtectClock",
                "RestrictNamespaces", "PrivateDevices"):
        if wanted(key):
            assert setting.get(key) == "yes", f"{path.name}: {key}={setting.get(key)}"
    assert "CapabilityBoundingSet" in setting and setting["CapabilityBoundingSet"] == ""
    assert setting.get("AmbientCapabilities") == ""
    assert setting.get("SystemCallArchitectures") == "native"
    assert setting.get("UMask") == "0077"
    families = setting.get("RestrictAddressFamilies", "").split()
    assert families and set(families) <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    if path.name not in DEVICE_UNITS:
        assert "AF_NETLINK" not in families
    if wanted("SystemCallFilter"):
        filters = values(unit, "Service", "SystemCallFilter")
        assert "@system-service" in filters, filters
    if path.name != BROWSER:
        assert setting.get("ProtectSystem") == "strict"
        assert setting.get("ProtectHome") == "yes"
        assert setting.get("User") not in (None, "root")


def test_systemd_analyze_security_scores(capsys):
    """The exposure score of each unit, printed for the record; needs a running systemd."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    scores = {}
    for path in SERVICES:
        result = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                                 "--no-pager", str(path)],
                                capture_output=True, text=True, timeout=60)
        match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
        if match is None:
            pytest.skip(f"systemd-analyze security cannot run here: {result.stderr[-300:]}")
        scores[path.name] = float(match.group(1))
    with capsys.disabled():
        print("\nsystemd-analyze security (0 = locked down, 10 = exposed):",
              ", ".join(f"{name} {score}" for name, score in scores.items()))


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_what_the_units_run_exists_in_the_install_layout(path):
    unit = parse_unit(path)
    apt = guide_apt_packages()

    assert value(unit, "Service", "WorkingDirectory", INSTALL_ROOT) == INSTALL_ROOT
    for argv in commands(unit):
        binary = argv[0]
        assert binary.startswith("/"), f"{path.name}: {binary} is not an absolute path"
        if binary.startswith(INSTALL_ROOT + "/"):
            assert in_checkout(binary).exists(), f"{binary}: `make install` does not make it"
        elif not Path(binary).exists():
            assert binary in SYSTEM_BINARIES, f"{path.name}: {binary} is not on this machine"
            assert SYSTEM_BINARIES[binary] in apt, f"the guide does not install {binary}"
        for arg in argv[1:]:
            for found in re.findall(rf"{INSTALL_ROOT}/[\w./-]+", arg):
                assert in_checkout(found).exists(), f"{path.name}: {found} is not in the repo"


def gunicorn_commands(unit: dict) -> list[list[str]]:
    return [argv for argv in commands(unit) if Path(argv[0]).name == "gunicorn"]


def gunicorn_option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names:
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def gunicorn_setting(argv: list[str], names: tuple[str, ...], config_key: str):
    """A gunicorn setting from the command line, else from its ``-c`` file, else None."""
    given = gunicorn_option(argv, *names)
    if given is not None:
        return given
    config = gunicorn_option(argv, "-c", "--config")
    if config:
        namespace: dict = {}
        exec(in_checkout(config).read_text(), namespace)  # noqa: S102 - our own config file
        return namespace.get(config_key)
    return None


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_gunicorn_apps_exist_and_device_owners_run_one_worker(path):
    unit = parse_unit(path)
    device_owner = "SupplementaryGroups" in dict(unit["Service"])

    for argv in gunicorn_commands(unit):
        module_name, _, factory = argv[-1].partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, factory.removesuffix("()")))
        bind = gunicorn_setting(argv, ("-b", "--bind"), "bind")
        assert bind and bind.startswith("127.0.0.1:"), f"{path.name} listens on {bind}"
        assert "--no-control-socket" in argv  # several gunicorn masters on one machine
        assert gunicorn_option(argv, "--access-logfile") is None  # card URLs carry tokens
        if device_owner:
            # the printer, the NFC reader and the card readers are one per device: one process
            assert str(gunicorn_setting(argv, ("-w", "--workers"), "workers")) == "1"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_flask_commands_of_the_units_exist(path, tmp_path):
    unit = parse_unit(path)
    flask_commands = [argv for argv in commands(unit) if Path(argv[0]).name == "flask"]

    for argv in flask_commands:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "flask"), *argv[1:], "--help"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "LOYALTY_INSTANCE_PATH": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr[-2000:]}"
        assert "Usage:" in result.stdout


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_credentials_and_state_reach_the_app(path):
    unit = parse_unit(path)
    environment = dict(
        v.split("=", 1) for v in values(unit, "Service", "Environment") if "=" in v
    )

    for credential in values(unit, "Service", "LoadCredential"):
        name, _, source = credential.partition(":")
        assert source.startswith("/etc/loyalty/")
        assert environment.get("LOYALTY_DEVICE_KEY_FILE") == f"%d/{name}"
    state = value(unit, "Service", "StateDirectory")
    if state and "LOYALTY_INSTANCE_PATH" in environment:
        assert environment["LOYALTY_INSTANCE_PATH"] in (f"%S/{state}", f"/var/lib/{state}")


def test_the_browser_shows_the_kiosk_app_on_tty1_and_keeps_nothing(units):
    kiosk = units["loyalty-kiosk.service"]
    browser = units["loyalty-kiosk-browser.service"]
    (app,) = gunicorn_commands(kiosk)
    (screen,) = [argv for argv in commands(browser) if Path(argv[0]).name == "cage"]

    chromium_at = screen.index("--") + 1
    assert Path(screen[chromium_at]).name == "chromium"
    flags = screen[chromium_at + 1 :]
    assert flags[-1] == f"http://{gunicorn_option(app, '-b', '--bind')}/"
    assert set(KIOSK_FLAGS) <= set(flags)
    # a profile in the user's StateDirectory, emptied before and after
    state = value(browser, "Service", "StateDirectory")
    (profile,) = [f.split("=", 1)[1] for f in flags if f.startswith("--user-data-dir=")]
    assert profile.startswith(f"%S/{state}/")
    for key in ("ExecStartPre", "ExecStopPost"):
        (cleanup,) = [shlex.split(line) for line in values(browser, "Service", key)]
        assert Path(cleanup[0]).name == "rm" and profile in cleanup
    assert "loyalty-kiosk.service" in " ".join(values(browser, "Unit", "After"))
    assert "loyalty-kiosk.service" in " ".join(values(browser, "Unit", "Wants"))
    assert "getty@tty1.service" in " ".join(values(browser, "Unit", "Conflicts"))
    assert value(browser, "Service", "TTYPath") == "/dev/tty1"
    assert value(browser, "Service", "PAMName") == "login"
    assert value(browser, "Service", "Restart") == "always"
    assert value(browser, "Service", "User") == "kiosk-browser"
    assert value(kiosk, "Service", "User") == "loyalty-kiosk"
    assert "loyalty-readers" in value(kiosk, "Service", "SupplementaryGroups").split()
    assert "lp" in value(kiosk, "Service", "SupplementaryGroups").split()


def test_the_guide_sets_up_what_the_kiosk_units_need(units):
    guide = GUIDE.read_text()

    for name in KIOSK_UNITS:
        unit = units[name]
        user = value(unit, "Service", "User")
        assert re.search(rf"useradd [^`]*\b{re.escape(user)}\n", guide), f"no useradd {user}"
        for group in (value(unit, "Service", "SupplementaryGroups") or "").split():
            if group.startswith("loyalty-"):
                assert f"groupadd --system {group}" in guide
        for env_file in values(unit, "Service", "EnvironmentFile"):
            assert env_file.lstrip("-") in guide
        for credential in values(unit, "Service", "LoadCredential"):
            assert credential.partition(":")[2] in guide
        assert f"systemd/{name}" in guide
    assert "enable --now loyalty-kiosk.service loyalty-kiosk-browser.service" in guide
    assert "systemd/99-loyalty-readers.rules" in guide and "blacklist pn533_usb" in guide


def env_assignments(text: str) -> dict[str, str]:
    """The ``LOYALTY_*=value`` lines of an environment file, unquoted as systemd does.

    systemd keeps whatever follows a value (``KEY="x"  # note`` is ``x# note``): such lines
    are refused here.
    """
    found = {}
    for line in text.splitlines():
        if not line.startswith("LOYALTY_"):
            continue
        match = re.fullmatch(r"(LOYALTY_\w+)=(\"[^\"]*\"|'[^']*'|[^\s\"'#]*)", line.rstrip())
        assert match, f"systemd would not read this as meant: {line!r}"
        found[match.group(1)] = shlex.split(match.group(2))[0] if match.group(2) else ""
    return found


@pytest.mark.parametrize("source", ["systemd/kiosk.env.example", "docs/RASPBERRY-PI.md"])
def test_kiosk_settings_shown_are_real_settings_and_load(source):
    from device_drivers.printer import parse_uri
    from device_drivers.settings import PREFIX, load_settings
    from kiosk_app import DEFAULTS

    environ = env_assignments((ROOT / source).read_text())

    assert {"LOYALTY_SERVER_URL", "LOYALTY_PRINTER", "LOYALTY_WRITER"} <= set(environ)
    unknown = {k for k in environ if k.removeprefix(PREFIX) not in DEFAULTS}
    assert not unknown, f"{source} names settings the kiosk does not have: {unknown}"
    settings = load_settings(DEFAULTS, environ=environ)
    assert isinstance(settings["IDLE_TIMEOUT"], int) and settings["IDLE_TIMEOUT"] > 0
    assert settings["CARD_LOCK"] is False
    assert parse_uri(settings["PRINTER"]).profile == "TM-T20II"
    assert settings["WRITER"].split(":")[0] in ("pcsc", "nfcpy", "")


@pytest.fixture(scope="module")
def verify_dir(tmp_path_factory) -> Path:
    """The units with /opt/loyalty pointing at this checkout, for ``systemd-analyze``."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine (Debian package systemd)")
    folder = tmp_path_factory.mktemp("units")
    for path in UNITS:
        (folder / path.name).write_text(path.read_text().replace(INSTALL_ROOT, str(ROOT)))
    return folder


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(verify_dir, path):
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(verify_dir / path.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = []
    for line in (result.stdout + result.stderr).splitlines():
        missing = re.search(r"Command (\S+) is not executable: No such file", line)
        if missing and missing.group(1) in SYSTEM_BINARIES:
            continue  # a Debian package this machine lacks (checked against the guide above)
        problems.append(line)
    assert not problems, "\n".join(problems)
