"""``escpos:`` and ``file:`` printers: ESC/POS receipt printers through python-escpos 3.x.

| capability | ``escpos:net:`` | ``escpos:usb:`` | ``escpos:serial:`` | ``file:`` |
|---|---|---|---|---|
| python-escpos class | ``Network`` | ``Usb`` | ``Serial`` | ``File`` |
| extra dependency | none | pyusb + libusb | pyserial | none |
| QR as an image (``qr=image``, default) | yes | yes | yes | yes |
| QR drawn by the printer (``qr=native``) | yes | yes | yes | yes |
| paper status first (``status=1``) | yes | yes | yes | no |
| ``timeout=`` (seconds) | connect, send, status | no | status read | no |
| ``offline`` if | refused, unreachable | not found, no pyusb | port won't open | file won't open |
| accented names | profile code pages | same | same | same |

Characters that none of the profile's code pages has are printed in a close ASCII form
(``ő`` -> ``o``); control characters in the slip's text are printed as spaces.

URI grammar (scheme and transport names are case-insensitive)::

    uri       = ( "escpos:net:" host [ ":" port ]      ; port 1..65535, default 9100
                | "escpos:usb:" vid ":" pid            ; hex, 1-4 digits, optional 0x
                | "escpos:serial:" device              ; e.g. /dev/ttyUSB0, COM3
                | "file:" path                         ; file:/x, file:///x, file:rel/x
                ) [ "?" query ]
    query     = param *( "&" param )
    param     = "profile=" NAME                        ; python-escpos profile, default TM-T88V
              | "width=" DOTS                          ; printable width, 64..4096; default
                                                       ; the profile's media width
              | "qr=" ( "image" | "native" )           ; default image
              | "image=" ( "raster" | "graphics" | "column" )
                                                       ; how images (logo, image QR) are sent:
                                                       ; GS v 0 (default), GS ( L, ESC *
              | "timeout=" SECONDS                     ; net and serial, default 10 / 1
              | "status=" ( "0" | "1" )                ; ask DLE EOT 4 first, default 0
              | "baud=" RATE                           ; serial only, default 9600

``host`` is an IPv4 address or a host name (python-escpos ``Network`` is IPv4 only). Unknown
or repeated parameters, and parameters that do not apply to the transport, are errors.

Profiles are python-escpos capability profiles (``escpos.capabilities``): ``TM-T88V``,
``TM-T20II``, ``POS-5890`` (generic 58 mm), ``default`` (generic, with ``width=``) ... An
unknown profile, a profile without a media width and no ``width=``, ``qr=native`` on a
profile without native QR codes, or an ``image=`` mode the profile lacks, are refused when
the printer is made (``open_printer``), with a message that says what to change. ``width=``
also sets the text columns (12 dots a character, font A) when it differs from the profile's
own width. docs/PRINTERS.md lists the settings of common printers.

A slip's ``logo`` (an image file) is printed centred above the shop name: converted to
1 bit (dithered), scaled down to fit the width and ``LOGO_MAX_HEIGHT`` dots, and sent the
way ``image=`` says. The prepared image is kept per path, size, modification time and
width. A logo that cannot be read is logged as a warning and the slip printed without it.

The ``file:`` printer opens ``path`` for writing at every job (python-escpos ``File`` opens it
with ``"wb"``): a regular file holds the bytes of the last job only, which is what the demo
shows and what a device node (``file:/dev/usb/lp0``) needs.

Every job opens the device, sends the slip, cuts and closes the device. Failures are
``PrinterError`` with reason ``offline`` (cannot reach the printer), ``paper-out`` (the status
query reported no paper; nothing else was sent) or ``failed`` (anything else, including a
connection lost in the middle of the job). Note that a network printer acknowledges nothing:
a job that reached the socket buffers is reported as printed.

python-escpos is imported only by this module, on first use. The root logging handler it
installs (``logging.basicConfig()`` at import, and implicitly through its module-level
``logging.info()`` calls) is removed again so that it does not take over the application's
logging.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import textwrap
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from device_drivers.base import CardSlip, DriverError, Printer, PrinterError

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "TM-T88V"  # 80 mm paper, 512 dots, 180 dpi, native QR, CP775/CP1257
DEFAULT_PORT = 9100
DEFAULT_NET_TIMEOUT = 10.0
DEFAULT_SERIAL_TIMEOUT = 1.0
DEFAULT_BAUD = 9600
QR_MODULE_DOTS = 8  # dots per QR module when the paper is wide enough (~1 mm at 180-203 dpi)
FALLBACK_COLUMNS = 42
FONT_A_DOTS = 12  # font A is 12 x 24 dots on Epson and compatible printers
MIN_WIDTH, MAX_WIDTH = 64, 4096
LOGO_MAX_HEIGHT = 240  # dots: about 3 cm at 203 dpi; a taller logo is scaled down

_IMAGE_IMPLS = {"raster": "bitImageRaster", "graphics": "graphics", "column": "bitImageColumn"}
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_HEX_ID_RE = re.compile(r"^(?:0[xX])?([0-9A-Fa-f]{1,4})$")
# Letters no Unicode decomposition turns into ASCII.
_ASCII_FALLBACK = {
    "ß": "ss", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ø": "o", "Ø": "O", "æ": "ae",
    "Æ": "AE", "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D", "ı": "i",
    "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T", "“": '"', "”": '"', "„": '"', "‘": "'",
    "’": "'", "‚": "'", "–": "-", "—": "-", "…": "...", "€": "EUR",
}  # fmt: skip


@dataclass(frozen=True)
class EscposSettings:
    """What an ``escpos:``/``file:`` URI says; see the module docstring for the grammar.

    Attributes:
        transport: ``net``, ``usb``, ``serial`` or ``file``.
        host: ``net``: the host name or IPv4 address.
        port: ``net``: the TCP port.
        vendor_id: ``usb``: the USB vendor id.
        product_id: ``usb``: the USB product id.
        path: ``serial``: the device; ``file``: the file written.
        profile: the python-escpos printer profile name.
        width: the printable width in dots (``width=``, else the profile's media width).
        columns: characters a line holds in font A at that width.
        qr: ``image`` or ``native``.
        image: ``raster``, ``graphics`` or ``column`` (how the logo and image QR codes are sent).
        timeout: ``net``/``serial``: seconds.
        status: ask the paper status before printing.
        baud: ``serial``: the baud rate.
    """

    transport: str
    host: str = ""
    port: int = DEFAULT_PORT
    vendor_id: int = 0
    product_id: int = 0
    path: str = ""
    profile: str = DEFAULT_PROFILE
    width: int = 0
    columns: int = FALLBACK_COLUMNS
    qr: str = "image"
    image: str = "raster"
    timeout: float | None = None
    status: bool = False
    baud: int = DEFAULT_BAUD

    @property
    def where(self) -> str:
        """The printer's address as a person reads it, e.g. ``127.0.0.1:9100``."""
        if self.transport == "net":
            return f"{self.host}:{self.port}"
        if self.transport == "usb":
            return f"USB {self.vendor_id:04x}:{self.product_id:04x}"
        return self.path


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Take back the root handler python-escpos installs behind the application's back.

    python-escpos calls ``logging.basicConfig()`` on import, and logs with the module-level
    ``logging.info()``/``logging.error()``, which call ``basicConfig()`` themselves when the
    root logger has no handler. The handlers ``basicConfig()`` added meanwhile (a
    ``StreamHandler`` with ``BASIC_FORMAT``) are removed again. An application that configured
    logging first is not affected either way.
    """
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            formatter = handler.formatter
            if (
                handler not in before
                and type(handler) is logging.StreamHandler
                and formatter is not None
                and formatter._fmt == logging.BASIC_FORMAT
            ):
                root.removeHandler(handler)


def _import_escpos() -> None:
    """Import python-escpos (once) without letting it configure the root logger."""
    if "escpos.printer" in sys.modules:
        return
    with _root_logging_kept():
        import escpos.capabilities
        import escpos.printer  # noqa: F401


def _bad(uri: str, why: str) -> DriverError:
    return DriverError(f"bad printer URI {uri!r}: {why}")


def _parse_hex_id(uri: str, text: str, what: str) -> int:
    match = _HEX_ID_RE.match(text)
    if not match or int(match.group(1), 16) == 0:
        raise _bad(uri, f"the USB {what} must be 1-4 hex digits, not zero (got {text!r})")
    return int(match.group(1), 16)


def _parse_location(uri: str, location: str) -> dict[str, Any]:
    scheme, sep, rest = location.partition(":")
    scheme = scheme.strip().lower()
    if not sep:
        raise _bad(uri, "expected escpos:net:HOST[:PORT], escpos:usb:VID:PID, "
                        "escpos:serial:DEVICE or file:PATH")  # fmt: skip
    if scheme == "file":
        path = rest
        if path.startswith("//"):
            # file:///abs/path (empty authority) is a URL spelling of file:/abs/path
            authority, slash, tail = path[2:].partition("/")
            if authority not in ("", "localhost") or not slash:
                raise _bad(uri, "a file: URI names a local path: file:/path or file:///path")
            path = "/" + tail
        if not path or path.endswith("/"):
            raise _bad(uri, "file: needs the path of a file to write, e.g. file:/tmp/printer.bin")
        return {"transport": "file", "path": path}
    if scheme != "escpos":
        raise _bad(uri, "the scheme must be escpos: or file:")
    transport, sep, target = rest.partition(":")
    transport = transport.strip().lower()
    if not transport:
        raise _bad(uri, "expected escpos:net:HOST[:PORT], escpos:usb:VID:PID or "
                        "escpos:serial:DEVICE")  # fmt: skip
    if transport == "net":
        if target.startswith("[") or target.count(":") > 1:
            raise _bad(uri, "IPv6 addresses are not supported (python-escpos Network is IPv4)")
        host, sep, port_text = target.partition(":")
        if not _HOST_RE.match(host):
            raise _bad(uri, f"expected escpos:net:HOST[:PORT], host {host!r} is not a host name")
        port = DEFAULT_PORT
        if sep:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise _bad(uri, f"the port must be a number from 1 to 65535, got {port_text!r}")
            port = int(port_text)
        return {"transport": "net", "host": host, "port": port}
    if transport == "usb":
        parts = target.split(":")
        if len(parts) != 2:
            raise _bad(uri, "expected escpos:usb:VID:PID in hex, e.g. escpos:usb:04b8:0202")
        return {
            "transport": "usb",
            "vendor_id": _parse_hex_id(uri, parts[0], "vendor id"),
            "product_id": _parse_hex_id(uri, parts[1], "product id"),
        }
    if transport == "serial":
        if not target.strip() or target != target.strip():
            raise _bad(uri, "expected escpos:serial:DEVICE, e.g. escpos:serial:/dev/ttyUSB0")
        return {"transport": "serial", "path": target}
    raise _bad(uri, f"unknown transport {transport!r}: use net, usb or serial")


def _parse_query(uri: str, query: str, transport: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError as exc:
        raise _bad(uri, f"malformed parameters after '?': {exc}") from exc
    allowed = {"profile", "width", "qr", "image", "status"}
    if transport in ("net", "serial"):
        allowed.add("timeout")
    if transport == "serial":
        allowed.add("baud")
    if transport == "file":
        allowed.discard("status")
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            raise _bad(uri, f"parameter {key!r} is not known for {transport} printers "
                            f"(known: {', '.join(sorted(allowed))})")  # fmt: skip
        if key in seen:
            raise _bad(uri, f"parameter {key!r} is given twice")
        seen[key] = value
    out: dict[str, Any] = {}
    if "profile" in seen:
        out["profile"] = seen["profile"]
    if "width" in seen:
        if not seen["width"].isdigit() or not MIN_WIDTH <= int(seen["width"]) <= MAX_WIDTH:
            raise _bad(uri, f"width must be the printable width in dots, {MIN_WIDTH} to "
                            f"{MAX_WIDTH} (e.g. 384 for 58 mm, 576 for 80 mm paper), "
                            f"got {seen['width']!r}")  # fmt: skip
        out["width"] = int(seen["width"])
    if "qr" in seen:
        if seen["qr"] not in ("image", "native"):
            raise _bad(uri, f"qr must be image or native, got {seen['qr']!r}")
        out["qr"] = seen["qr"]
    if "image" in seen:
        if seen["image"] not in _IMAGE_IMPLS:
            raise _bad(
                uri, f"image must be one of {', '.join(_IMAGE_IMPLS)}, got {seen['image']!r}"
            )
        out["image"] = seen["image"]
    if "status" in seen:
        if seen["status"] not in ("0", "1"):
            raise _bad(uri, f"status must be 0 or 1, got {seen['status']!r}")
        out["status"] = seen["status"] == "1"
    if "timeout" in seen:
        try:
            timeout = float(seen["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 3600:
            raise _bad(uri, f"timeout must be a number of seconds > 0, got {seen['timeout']!r}")
        out["timeout"] = timeout
    if "baud" in seen:
        if not seen["baud"].isdigit() or not 50 <= int(seen["baud"]) <= 4_000_000:
            raise _bad(uri, f"baud must be a baud rate such as 9600, got {seen['baud']!r}")
        out["baud"] = int(seen["baud"])
    return out


def _check_profile(uri: str, fields: dict[str, Any]) -> None:
    """Check the profile against the other settings; fill in ``width`` and ``columns``."""
    _import_escpos()
    from escpos.capabilities import CAPABILITIES

    profiles = CAPABILITIES["profiles"]
    name = fields.get("profile", DEFAULT_PROFILE)
    if name not in profiles:
        raise _bad(uri, f"unknown printer profile {name!r}: use one of python-escpos's "
                        f"profiles ({', '.join(sorted(profiles, key=str.lower))}); "
                        "docs/PRINTERS.md says which fits common printers")  # fmt: skip
    data = profiles[name]
    profile_width = _profile_width(data)
    if "width" not in fields:
        if profile_width is None:
            raise _bad(uri, f"profile {name} does not say how wide its paper is: add width= "
                            "in dots (384 for 58 mm paper, 576 for 80 mm)")  # fmt: skip
        fields["width"] = profile_width
    fields["columns"] = _profile_columns(data)
    if fields["width"] != profile_width or fields["columns"] is None:
        fields["columns"] = max(1, fields["width"] // FONT_A_DOTS)


def _check_features(uri: str, settings: EscposSettings) -> None:
    from escpos.capabilities import CAPABILITIES

    features = CAPABILITIES["profiles"][settings.profile].get("features", {})
    if settings.qr == "native" and not features.get("qrCode"):
        raise _bad(uri, f"profile {settings.profile} cannot print native QR codes: use qr=image")
    impl = _IMAGE_IMPLS[settings.image]
    if not features.get(impl):  # the logo is an image whatever qr= says
        raise _bad(uri, f"profile {settings.profile} has no {impl} images: choose another image=")


def parse_uri(uri: str) -> EscposSettings:
    """Read an ``escpos:`` or ``file:`` printer URI.

    Args:
        uri: e.g. ``escpos:net:192.168.1.50``, ``escpos:usb:04b8:0202?qr=native``,
            ``escpos:serial:/dev/ttyUSB0?baud=38400``, ``file:/tmp/printer.bin``.

    Returns:
        The settings; nothing is opened.

    Raises:
        DriverError: the URI is malformed, or the profile is unknown or does not fit the other
            settings (the message says what is expected).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise DriverError("empty printer URI")
    location, _, query = uri.partition("?")
    fields = _parse_location(uri, location)
    fields.update(_parse_query(uri, query, fields["transport"]))
    if "timeout" not in fields and fields["transport"] in ("net", "serial"):
        fields["timeout"] = (
            DEFAULT_NET_TIMEOUT if fields["transport"] == "net" else DEFAULT_SERIAL_TIMEOUT
        )
    _check_profile(uri, fields)
    settings = EscposSettings(**fields)
    _check_features(uri, settings)
    return settings


def open_escpos(uri: str) -> EscposPrinter:
    """Make the printer for an ``escpos:`` or ``file:`` URI (the ``PRINTERS`` factory).

    Nothing is opened here: every ``print_card`` opens and closes the device.

    Args:
        uri: see the module docstring, e.g. ``escpos:net:127.0.0.1:9100?status=1``.

    Returns:
        An ``EscposPrinter``.

    Raises:
        DriverError: the URI is malformed.
    """
    return EscposPrinter(uri)


class EscposPrinter(Printer):
    """A receipt printer spoken to in ESC/POS through python-escpos.

    Args:
        uri: an ``escpos:`` or ``file:`` URI (see the module docstring).
        greeting: the greeting line; ``{first_name}`` is replaced by the slip's first name.

    Raises:
        DriverError: the URI is malformed.
    """

    def __init__(self, uri: str, *, greeting: str = "Welcome, {first_name}!") -> None:
        self.uri = uri
        self.settings = parse_uri(uri)
        self.greeting = greeting

    def __repr__(self) -> str:
        return f"EscposPrinter({self.uri!r})"

    # -- the job ----------------------------------------------------------------------------
    def print_card(self, slip: CardSlip) -> None:
        """Print one card slip: logo, shop name, greeting, customer code, QR, instructions, cut.

        The device is opened for the job and always closed afterwards. With ``status=1`` the
        paper status is asked first and nothing else is sent if the paper is out.

        Args:
            slip: what to print; the QR carries ``slip.card_url`` in upper case (alphanumeric
                QR mode, CARDS.md §1), error correction M. A ``slip.logo`` that cannot be read
                is left out (with a warning in the log), the rest is printed.

        Raises:
            PrinterError: reason ``offline`` (the printer cannot be reached), ``paper-out``
                (no paper; nothing printed) or ``failed`` (the job broke off or was refused).
        """
        # before the device is opened: a bad logo file costs nothing but the logo
        logo = _logo_image(slip.logo, self.settings.width) if slip.logo else None
        with _root_logging_kept():
            device = self._new_device()
            finished = False
            try:
                self._open(device)
                if self.settings.status:
                    self._check_paper(device)
                try:
                    self._send(device, slip, logo)
                except PrinterError:
                    raise
                except Exception as exc:
                    raise self._failed(exc) from exc
                finished = True
            finally:
                self._close(device, report=finished)
        log.info("card slip printed on %s", self.settings.where)

    def _offline(self, detail: str = "") -> PrinterError:
        s = self.settings
        if s.transport == "net":
            message = f"The printer at {s.where} does not answer: check that it is on and connected"
        elif s.transport == "usb":
            message = (
                f"The USB printer {s.vendor_id:04x}:{s.product_id:04x} is not found: "
                "check that it is on and its cable is plugged in"
            )
        elif s.transport == "serial":
            message = f"The printer on {s.path} cannot be opened: check that it is on and connected"
        else:
            message = f"The printer file {s.path} cannot be written: check the path"
        return PrinterError(message + (f" ({detail})" if detail else ""), "offline")

    def _failed(self, exc: BaseException) -> PrinterError:
        log.warning("printing on %s failed: %r", self.settings.where, exc)
        return PrinterError(
            f"The printer at {self.settings.where} stopped in the middle of the card: "
            "check it and print the card again",
            "failed",
        )

    def _new_device(self) -> Any:
        """Build the python-escpos object (nothing is opened yet)."""
        _import_escpos()
        from escpos import printer as escpos_printer

        s = self.settings
        try:
            if s.transport == "net":
                device = escpos_printer.Network(
                    host=s.host, port=s.port, timeout=s.timeout, profile=s.profile
                )
            elif s.transport == "usb":
                if not escpos_printer.Usb.is_usable():
                    # checked here: Usb.close() (also run by __del__) raises without pyusb
                    raise self._offline("USB support (pyusb) is not installed on this computer")
                device = escpos_printer.Usb(
                    idVendor=s.vendor_id, idProduct=s.product_id, profile=s.profile
                )
            elif s.transport == "serial":
                device = escpos_printer.Serial(
                    devfile=s.path, baudrate=s.baud, timeout=s.timeout, profile=s.profile
                )
            else:
                device = escpos_printer.File(devfile=s.path, profile=s.profile)
            _use_width(device, s.width)
            return device
        except PrinterError:
            raise
        except Exception as exc:
            raise self._offline() from exc

    def _open(self, device: Any) -> None:
        try:
            device.open()
        except Exception as exc:
            # DeviceNotFoundError (refused, unreachable, no such file/port/USB device), and
            # what Usb.open() lets through: usb.core.NoBackendError when libusb is missing.
            log.warning("cannot open printer %s: %s", self.settings.where, exc)
            raise self._offline() from exc

    def _check_paper(self, device: Any) -> None:
        """Ask DLE EOT 4 (python-escpos ``paper_status()``'s query and bit masks).

        Unlike ``paper_status()``, no answer is an error, not "plenty of paper".
        """
        from escpos.constants import RT_MASK_LOWPAPER, RT_MASK_NOPAPER, RT_STATUS_PAPER

        try:
            answer = bytes(device.query_status(RT_STATUS_PAPER))
        except TimeoutError as exc:
            answer, cause = b"", exc
        except Exception as exc:
            # USB/serial timeouts land here too; a reset socket is a dropped connection
            if isinstance(exc, ConnectionError):
                raise self._failed(exc) from exc
            answer, cause = b"", exc
        else:
            cause = None
        if not answer:
            raise PrinterError(
                f"The printer at {self.settings.where} did not report its paper status: check "
                "it, or have status=1 removed from its settings if it never answers",
                "failed",
            ) from cause
        if answer[0] & _STATUS_FIXED_MASK != _STATUS_FIXED_BITS:
            # not a status byte (bits 0 and 7 clear, 1 and 4 set, whatever the paper):
            # noise or another answer; "plenty of paper" would be a guess
            raise PrinterError(
                f"The printer at {self.settings.where} answered the paper status query with "
                f"{answer[:8].hex(' ')}, which is not a status: check it, or have status=1 "
                "removed from its settings",
                "failed",
            )
        if answer[0] & RT_MASK_NOPAPER == RT_MASK_NOPAPER:
            raise PrinterError("The printer is out of paper", "paper-out")
        if answer[0] & RT_MASK_LOWPAPER == RT_MASK_LOWPAPER:
            log.warning("printer %s: paper roll near its end", self.settings.where)

    def _send(self, p: Any, slip: CardSlip, logo: Any) -> None:
        from escpos.constants import QR_ECLEVEL_M

        text = _TextCleaner(p)
        columns = self.settings.columns
        impl = _IMAGE_IMPLS[self.settings.image]
        p.hw("INIT")  # ESC @: a clean state whatever the last job left
        if logo is not None:
            p.set(align="center")
            p.image(logo, impl=impl, center=False)  # already padded to the paper's width
            p.ln()
        p.set(align="center", bold=True, double_width=True, double_height=True)
        p.textln(text(slip.shop_name))
        p.set(normal_textsize=True, bold=False)
        p.ln()
        first_name = text(slip.first_name).strip()
        greeting = self.greeting.replace("{first_name}", first_name)
        if not first_name:
            greeting = re.sub(r"[,\s]+!", "!", greeting)
        p.textln(greeting)
        p.ln()
        code = text(slip.customer_code).strip()
        scale = next((n for n in (3, 2) if len(code) * n <= columns), 1)
        p.set(custom_size=True, width=scale, height=scale, bold=True)
        p.textln(code)
        p.set(custom_size=True, width=1, height=1)
        p.set(normal_textsize=True, bold=False)
        content = slip.card_url.strip().upper()
        size = _qr_module_dots(content, self.settings.width)
        if self.settings.qr == "native":
            p.ln()
            p.qr(content, ec=QR_ECLEVEL_M, size=size, native=True)
            p.ln()
        else:
            p.qr(
                content,
                ec=QR_ECLEVEL_M,
                size=size,
                native=False,
                # center pads the image to the paper width (the profile's, see _use_width)
                image_arguments={"impl": impl, "center": True},
            )
        p.set(align="left")
        for line in slip.lines:
            for wrapped in textwrap.wrap(text(line), columns) or [""]:
                p.textln(wrapped)
        p.cut()

    def _close(self, device: Any, *, report: bool) -> None:
        try:
            device.close()
        except Exception as exc:
            if not report:
                log.warning("closing printer %s failed too: %r", self.settings.where, exc)
                return
            raise PrinterError(
                f"The printer at {self.settings.where} failed at the end of the card: "
                "check that it printed completely",
                "failed",
            ) from exc


# -- helpers ----------------------------------------------------------------------------------
# DLE EOT n answers (ESC/POS): bits 0 and 7 are always 0, bits 1 and 4 always 1
_STATUS_FIXED_MASK, _STATUS_FIXED_BITS = 0x93, 0x12


def _profile_width(data: dict[str, Any]) -> int | None:
    """The media width in dots a python-escpos profile gives (some say ``"Unknown"``)."""
    try:
        return int(data["media"]["width"]["pixels"])
    except (KeyError, TypeError, ValueError):
        return None


def _profile_columns(data: dict[str, Any]) -> int | None:
    try:
        return int(data["fonts"]["0"]["columns"])
    except (KeyError, TypeError, ValueError):
        return None


def _use_width(p: Any, width: int) -> None:
    """Make the device's profile say ``width``: python-escpos centres images on it.

    The profile data is shared by every printer of that profile: this one gets a copy.
    """
    data = p.profile.profile_data
    if _profile_width(data) == width:
        return
    media = dict(data.get("media") or {})
    media["width"] = {**(media.get("width") or {}), "pixels": width}
    p.profile.profile_data = {**data, "media": media}


def _qr_module_dots(content: str, width_dots: int) -> int:
    """Dots per module: ``QR_MODULE_DOTS``, less if the code would not fit the paper."""
    import qrcode

    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=1)
    code.add_data(content)
    code.make(fit=True)
    modules = code.modules_count + 2  # python-escpos draws a 1-module border
    return max(1, min(QR_MODULE_DOTS, width_dots // modules))


def _logo_image(path: str, width: int) -> Any:
    """The slip's logo ready to print, or ``None`` (logged) if the file cannot be used."""
    try:
        stat = os.stat(path)
        return _prepared_logo(path, stat.st_mtime_ns, stat.st_size, width)
    except Exception as exc:  # missing, unreadable, not an image, too large to decode ...
        log.warning("logo %s left off the card slip: %s", path, exc)
        return None


@functools.lru_cache(maxsize=8)
def _prepared_logo(path: str, mtime_ns: int, size: int, width: int) -> Any:
    """Load ``path`` as a 1-bit image centred on a ``width``-dot-wide canvas (cached).

    ``mtime_ns`` and ``size`` are in the key so that a replaced file is read again.
    """
    from PIL import Image

    canvas_width = max(8, width // 8 * 8)  # whole bytes: GS v 0 pads on the right otherwise
    with Image.open(path) as source:
        source.load()
        rgba = source.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))  # transparent = paper
    grey = flat.convert("L")
    scale = min(1.0, canvas_width / grey.width, LOGO_MAX_HEIGHT / grey.height)
    if scale < 1.0:
        size_after = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size_after, Image.Resampling.LANCZOS)
    bitmap = grey.convert("1")  # Floyd-Steinberg dithering: greys stay greys
    canvas = Image.new("1", (canvas_width, bitmap.height), 1)
    canvas.paste(bitmap, ((canvas_width - bitmap.width) // 2, 0))
    return canvas


class _TextCleaner:
    """Make text safe to print: no control bytes, only characters the profile can encode.

    python-escpos switches code pages (``ESC t``) by itself and prints ``?`` for a character
    none of the profile's code pages has; such characters become a close ASCII form instead
    (``ő`` -> ``o``, ``ł`` -> ``l``). Control characters (which could be ESC/POS commands)
    become spaces.
    """

    def __init__(self, p: Any) -> None:
        try:
            encoder = p.magic.encoder
            pages = list(encoder.codepages)
            self._can = lambda ch: any(_safe_can_encode(encoder, page, ch) for page in pages)
        except Exception:
            self._can = lambda ch: False
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        return "".join(self._char(ch) for ch in str(text))

    def _char(self, ch: str) -> str:
        if " " <= ch < "\x7f":
            return ch
        if ch not in self._cache:
            self._cache[ch] = self._convert(ch)
        return self._cache[ch]

    def _convert(self, ch: str) -> str:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch == "\x7f":
            return " "
        if self._can(ch):
            return ch
        if ch in _ASCII_FALLBACK:
            return _ASCII_FALLBACK[ch]
        decomposed = unicodedata.normalize("NFKD", ch)
        ascii_form = "".join(c for c in decomposed if " " <= c < "\x7f")
        if ascii_form:
            return ascii_form
        return " " if unicodedata.category(ch).startswith("Z") else "?"


def _safe_can_encode(encoder: Any, page: str, ch: str) -> bool:
    try:
        return bool(encoder.can_encode(page, ch))
    except Exception:
        return False
