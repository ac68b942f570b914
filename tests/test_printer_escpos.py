"""The ESC/POS printer driver through the real stack.

python-escpos ``Network`` prints to ``CapturePrinter`` (a TCP server on 127.0.0.1), ``File``
to a temporary file; the bytes are read back with ``tests.support.escpos_parse``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zxingcpp

from device_drivers.base import CardSlip, DriverError, PrinterError, open_printer
from device_drivers.printer import EscposPrinter, parse_uri
from tests.support import escpos_parse as ep
from tests.support.escpos_capture import CapturePrinter

pytestmark = pytest.mark.hardware

TOKEN = "CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"
CARD_URL = f"https://shop.example/c/{TOKEN}"
QR_TEXT = CARD_URL.upper()
SHOP = "Kavinė Ąžuolas"
CODE = "4821-7730"
LINES = ("Show this card at the till.", "Scan the code to see your points.")
PAPER_STATUS_QUERY = b"\x10\x04\x04"


def make_slip(first_name: str = "Jūratė", **changes) -> CardSlip:
    fields = dict(
        shop_name=SHOP, first_name=first_name, customer_code=CODE, card_url=CARD_URL, lines=LINES
    )
    fields.update(changes)
    return CardSlip(**fields)


@pytest.fixture
def capture():
    with CapturePrinter() as printer:
        yield printer


def print_one(capture: CapturePrinter, query: str = "", slip: CardSlip | None = None) -> bytes:
    uri = capture.uri + (f"?{query}" if query else "")
    open_printer(uri).print_card(slip or make_slip())
    (job,) = capture.wait_for_jobs(1)
    return job


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the QR --------------------------------------------------------------------------------------
@pytest.mark.parametrize("image", ["raster", "graphics", "column"])
def test_image_qr_decodes_to_the_upper_case_url(capture, image):
    job = print_one(capture, f"qr=image&image={image}")

    assert ep.decode_qr_codes(job) == [QR_TEXT]
    assert ep.native_qr_payloads(job) == []
    expected_command = {"raster": "GS v 0", "graphics": "GS ( L", "column": "ESC *"}[image]
    assert expected_command in {tok.kind for tok in ep.tokenize(job)}
    # The token is only in the picture: never sent as text.
    assert TOKEN.encode() not in job and TOKEN.lower().encode() not in job


def test_image_qr_is_version_3_m_at_8_dots_per_module(capture):
    (image,) = ep.images(print_one(capture))

    (code,) = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert code.text == QR_TEXT
    assert code.ec_level == "M"
    left, top, right, bottom = image.point(lambda v: 255 - v).getbbox()
    # 57 alphanumeric characters fit version 3 (29 modules): 29 x 8 dots, centred on 512 dots.
    assert (right - left, bottom - top) == (29 * 8, 29 * 8)
    assert abs((left + right) / 2 - 256) <= 8


def test_native_qr_carries_the_upper_case_url(capture):
    job = print_one(capture, "qr=native")

    assert ep.decode_qr_codes(job) == [QR_TEXT]
    assert ep.images(job) == []
    qr_commands = {
        tok.params[:2]: tok.params[2:] for tok in ep.tokenize(job) if tok.kind == "GS ( k"
    }
    assert qr_commands[b"1E"] == b"1"  # error correction M
    assert qr_commands[b"1C"] == b"\x08"  # 8 dots per module
    assert qr_commands[b"1Q"] == b"0"  # and printed


# -- the text ------------------------------------------------------------------------------------
@pytest.mark.parametrize("qr", ["image", "native"])
@pytest.mark.parametrize("first_name", ["Jūratė", "Élodie"])
def test_prints_the_first_name_and_code_and_nothing_else_personal(capture, first_name, qr):
    job = print_one(capture, f"qr={qr}", make_slip(first_name))

    assert ep.text_lines(job) == [SHOP, f"Welcome, {first_name}!", CODE, *LINES]


def test_layout_shop_name_bold_double_centred_code_large(capture):
    job = print_one(capture)
    lines = {line.text: line for line in ep.styled_lines(job)}
    tokens = ep.tokenize(job)

    shop = lines[SHOP]
    assert (shop.bold, shop.width, shop.height, shop.align) == (True, 2, 2, "center")
    assert lines[CODE].width >= 2 and lines[CODE].height >= 2
    assert lines[LINES[0]].width == 1 and lines[LINES[0]].bold is False
    assert tokens[0].kind == "ESC @"
    assert [tok.kind for tok in tokens].count("GS V") == 1
    assert tokens[-1].kind == "GS V"


def test_all_lithuanian_letters_survive(capture):
    name = "ĄČĘĖĮŠŲŪŽ ąčęėįšųūž"
    job = print_one(capture, slip=make_slip(name))

    assert f"Welcome, {name}!" in ep.text_lines(job)


def test_unprintable_characters_fall_back_and_control_bytes_are_dropped(capture):
    # "Ǻ" is in none of the profile's code pages; ESC/GS in a name must not become commands.
    slip = make_slip("Ǻsa\x1dV\x00", lines=("Line\x1bi one 中",))
    job = print_one(capture, slip=slip)

    lines = ep.text_lines(job)
    assert lines[1] == "Welcome, Asa V!"
    assert lines[3:] == ["Line i one ?"]
    assert [tok.kind for tok in ep.tokenize(job)].count("GS V") == 1
    assert "ESC i" not in {tok.kind for tok in ep.tokenize(job)}


# -- failures ------------------------------------------------------------------------------------
def test_closed_port_is_offline_with_a_clear_message():
    port = closed_port()
    printer = open_printer(f"escpos:net:127.0.0.1:{port}?timeout=2")

    with pytest.raises(PrinterError) as caught:
        printer.print_card(make_slip())

    assert caught.value.reason == "offline"
    assert str(caught.value) == (
        f"The printer at 127.0.0.1:{port} does not answer: check that it is on and connected"
    )


def test_paper_out_with_status_sends_nothing_but_the_query(capture):
    capture.paper = "out"

    with pytest.raises(PrinterError) as caught:
        open_printer(capture.uri + "?status=1").print_card(make_slip())

    assert caught.value.reason == "paper-out"
    assert str(caught.value) == "The printer is out of paper"
    assert capture.wait_for_jobs(1) == [PAPER_STATUS_QUERY]
    assert capture.status_queries == [4]


def test_status_ok_is_asked_first_then_the_card_prints(capture):
    job = print_one(capture, "status=1")

    assert job.startswith(PAPER_STATUS_QUERY + b"\x1b@")
    assert ep.decode_qr_codes(job) == [QR_TEXT]


def test_paper_near_end_still_prints(capture, caplog):
    capture.paper = "near-end"

    job = print_one(capture, "status=1")

    assert ep.decode_qr_codes(job) == [QR_TEXT]
    assert "near its end" in caplog.text


def test_status_is_not_asked_by_default(capture):
    capture.paper = "out"  # a printer that would say so, if asked

    job = print_one(capture)

    assert capture.status_queries == []
    assert "DLE EOT" not in {tok.kind for tok in ep.tokenize(job)}


def test_status_never_answered_is_failed_not_a_hang():
    with CapturePrinter(answer_status=False) as capture:
        started = time.monotonic()
        with pytest.raises(PrinterError) as caught:
            open_printer(capture.uri + "?status=1&timeout=0.3").print_card(make_slip())
        assert time.monotonic() - started < 3
        assert caught.value.reason == "failed"
        assert "paper status" in str(caught.value)
        assert capture.wait_for_jobs(1) == [PAPER_STATUS_QUERY]


@pytest.mark.parametrize("drop", ["on-status", "after-status"])
def test_connection_dropped_mid_job_is_failed(drop):
    # status=1 makes the drop happen at a known point: while the driver waits for the answer
    # ("on-status"), or just after it got it, before the card is sent ("after-status").
    with CapturePrinter(drop=drop) as capture:
        port = capture.port
        with pytest.raises(PrinterError) as caught:
            open_printer(capture.uri + "?status=1").print_card(make_slip())
        (job,) = capture.wait_for_jobs(1)

    assert caught.value.reason == "failed"
    assert str(caught.value) == (
        f"The printer at 127.0.0.1:{port} stopped in the middle of the card: "
        "check it and print the card again"
    )
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert job.startswith(PAPER_STATUS_QUERY)
    assert ep.decode_qr_codes(job) == []


def test_usb_printer_that_is_not_there_is_offline():
    with pytest.raises(PrinterError) as caught:
        open_printer("escpos:usb:0x1d6b:fffe").print_card(make_slip())

    assert caught.value.reason == "offline"
    assert "USB printer 1d6b:fffe is not found" in str(caught.value)


def test_serial_port_that_is_not_there_is_offline(tmp_path):
    with pytest.raises(PrinterError) as caught:
        open_printer(f"escpos:serial:{tmp_path}/ttyUSB9").print_card(make_slip())

    assert caught.value.reason == "offline"
    assert f"{tmp_path}/ttyUSB9 cannot be opened" in str(caught.value)


# -- file: ---------------------------------------------------------------------------------------
def test_file_printer_writes_the_job(tmp_path):
    out = tmp_path / "printer.bin"

    open_printer(f"file:{out}").print_card(make_slip("Élodie"))

    data = out.read_bytes()
    assert ep.decode_qr_codes(data) == [QR_TEXT]
    assert "Welcome, Élodie!" in ep.text_lines(data)


def test_file_printer_holds_the_last_job_only(tmp_path):
    out = tmp_path / "printer.bin"
    printer = open_printer(f"file://{out}?qr=native")

    printer.print_card(make_slip("Élodie"))
    printer.print_card(make_slip("Jūratė"))

    data = out.read_bytes()
    assert ep.decode_qr_codes(data) == [QR_TEXT]
    assert "Welcome, Jūratė!" in ep.text_lines(data)
    assert not any("Élodie" in line for line in ep.text_lines(data))


def test_file_printer_in_a_missing_directory_is_offline(tmp_path):
    with pytest.raises(PrinterError) as caught:
        open_printer(f"file:{tmp_path}/nowhere/printer.bin").print_card(make_slip())

    assert caught.value.reason == "offline"
    assert "nowhere/printer.bin" in str(caught.value)


# -- URIs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "settings"),
    [
        ("escpos:net:192.168.1.50", dict(transport="net", host="192.168.1.50", port=9100)),
        ("ESCPOS:NET:printer.local:9101", dict(host="printer.local", port=9101, timeout=10.0)),
        ("escpos:net:10.0.0.2?timeout=2.5&status=1", dict(timeout=2.5, status=True)),
        ("escpos:usb:04b8:0202", dict(transport="usb", vendor_id=0x04B8, product_id=0x0202)),
        ("escpos:usb:0x0416:0x5011?qr=native", dict(vendor_id=0x0416, qr="native")),
        ("escpos:serial:/dev/ttyUSB0?baud=38400", dict(path="/dev/ttyUSB0", baud=38400)),
        ("escpos:serial:COM3", dict(transport="serial", path="COM3", timeout=1.0)),
        ("file:/tmp/p.bin", dict(transport="file", path="/tmp/p.bin", timeout=None)),
        ("file:///tmp/p.bin?image=column", dict(path="/tmp/p.bin", image="column")),
        ("file:out/p.bin?profile=TM-T20II", dict(path="out/p.bin", profile="TM-T20II")),
        ("escpos:net:h", dict(profile="TM-T88V", width=512, columns=42)),
        ("escpos:net:h?profile=TM-T20II", dict(width=576, columns=48)),
        ("escpos:net:h?profile=TM-T20II&width=576&qr=native", dict(width=576, qr="native")),
        ("escpos:net:h?profile=POS-5890", dict(width=384, columns=32)),
        ("escpos:usb:0416:5011?profile=default&width=576", dict(width=576, columns=48)),
        ("escpos:serial:/dev/ttyS0?width=384", dict(profile="TM-T88V", width=384, columns=32)),
        ("file:/tmp/p.bin?profile=TM-T20II-42col", dict(width=546, columns=42)),
    ],
)
def test_uri_grammar(uri, settings):
    parsed = parse_uri(uri)
    for key, value in settings.items():
        assert getattr(parsed, key) == value, key
    printer = open_printer(uri)
    assert isinstance(printer, EscposPrinter) and printer.settings == parsed
    if "profile=" not in uri:
        assert parsed.profile == "TM-T88V"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("escpos:", "expected escpos:net"),
        ("escpos:net:", "host"),
        ("escpos:net:127.0.0.1:", "port"),
        ("escpos:net:127.0.0.1:0", "port"),
        ("escpos:net:127.0.0.1:65536", "port"),
        ("escpos:net:127.0.0.1:ipp", "port"),
        ("escpos:net:[::1]:9100", "IPv6"),
        ("escpos:net:bad host", "host"),
        ("escpos:usb:04b8", "VID:PID"),
        ("escpos:usb:04b8:0202:1", "VID:PID"),
        ("escpos:usb:zz:0202", "vendor id"),
        ("escpos:usb:0:0202", "vendor id"),
        ("escpos:usb:04b8:12345", "product id"),
        ("escpos:serial:", "DEVICE"),
        ("escpos:bluetooth:00:11", "unknown transport"),
        ("escpos:net:h?qr=svg", "qr must be image or native"),
        ("escpos:net:h?qr", "malformed"),
        ("escpos:net:h?image=sixel", "image must be"),
        ("escpos:net:h?profile=NO-SUCH-PRINTER", "unknown printer profile"),
        ("escpos:net:h?status=yes", "status must be 0 or 1"),
        ("escpos:net:h?timeout=-1", "timeout"),
        ("escpos:net:h?timeout=soon", "timeout"),
        ("escpos:net:h?colour=red", "'colour' is not known"),
        ("escpos:net:h?qr=image&qr=native", "twice"),
        ("escpos:net:h?baud=9600", "'baud' is not known"),
        ("escpos:usb:04b8:0202?timeout=3", "'timeout' is not known"),
        ("file:/tmp/p.bin?status=1", "'status' is not known"),
        ("file:", "path"),
        ("file:/tmp/", "path"),
        ("file://otherhost/p.bin", "local path"),
        ("escpos:net:h?&&", "malformed"),
        ("escpos:net:h?width=wide", "width must be the printable width in dots"),
        ("escpos:net:h?width=32", "width must be"),
        ("escpos:net:h?width=5000", "width must be"),
        ("escpos:net:h?width=-576", "width must be"),
        ("escpos:net:h?width=576&width=384", "twice"),
        ("escpos:net:h?profile=default", "add width= in dots"),
        ("escpos:net:h?profile=TUP500", "profile TUP500 does not say how wide its paper is"),
        ("escpos:net:h?profile=POS-5890&qr=native", "cannot print native QR codes"),
        ("escpos:net:h?profile=POS-5890&image=column", "has no bitImageColumn images"),
        ("file:/tmp/p.bin?profile=tm-t20ii", "unknown printer profile 'tm-t20ii'"),
    ],
)
def test_malformed_uris_raise_driver_error(uri, says):
    with pytest.raises(DriverError) as caught:
        open_printer(uri)

    assert not isinstance(caught.value, PrinterError)
    assert str(caught.value).startswith(f"bad printer URI {uri!r}: ")
    assert says in str(caught.value)


def test_python_escpos_does_not_take_over_the_root_logger(tmp_path):
    # python-escpos runs logging.basicConfig() on import and calls logging.info() (which runs
    # it too) on open/close; an application that has not configured logging yet keeps none.
    code = (
        "import logging\n"
        "from device_drivers.base import CardSlip, open_printer\n"
        f"printer = open_printer('file:{tmp_path}/p.bin')\n"
        "printer.print_card(CardSlip('Shop', 'Ana', '1', 'https://shop.example/c/X'))\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "0"
    assert (tmp_path / "p.bin").stat().st_size > 0


# -- the logo ------------------------------------------------------------------------------------
def make_logo(path: Path, size: tuple[int, int], *, mode: str = "RGB") -> str:
    """A black logo with a white stripe down the middle (so its centre can be found)."""
    from PIL import Image, ImageDraw

    image = Image.new(mode, size, "black")
    ImageDraw.Draw(image).rectangle(
        (size[0] // 2 - size[0] // 20, 0, size[0] // 2 + size[0] // 20, size[1]), fill="white"
    )
    image.save(path)
    return str(path)


def test_slip_order_logo_shop_name_first_name_code_qr_instructions_cut(capture, tmp_path):
    logo = make_logo(tmp_path / "logo.png", (300, 100))

    job = print_one(capture, slip=make_slip(logo=logo))

    assert ep.print_order(job) == [
        ("image", ""),
        ("text", SHOP),
        ("text", "Welcome, Jūratė!"),
        ("text", CODE),
        ("image", ""),
        *[("text", line) for line in LINES],
        ("cut", ""),
    ]
    logo_image, qr_image = ep.images(job)
    assert ep.decode_qr_codes(job) == [QR_TEXT]
    assert ep._read_qr(logo_image) == []


def test_wide_logo_is_scaled_down_to_the_paper_width(capture, tmp_path):
    logo = make_logo(tmp_path / "logo.png", (1200, 300))

    job = print_one(capture, slip=make_slip(logo=logo))

    logo_image = ep.images(job)[0]
    assert logo_image.size == (512, 128)  # TM-T88V: 512 dots; 1200 x 300 -> 512 x 128
    assert ep.ink_box(logo_image) == (0, 0, 512, 128)


def test_small_logo_keeps_its_size_and_is_centred(capture, tmp_path):
    logo = make_logo(tmp_path / "logo.png", (200, 60))

    logo_image = ep.images(print_one(capture, slip=make_slip(logo=logo)))[0]

    assert logo_image.width == 512
    left, top, right, bottom = ep.ink_box(logo_image)
    assert (right - left, bottom - top) == (200, 60)
    assert abs((left + right) / 2 - 256) <= 1
    # the white stripe is in the middle of the paper
    assert logo_image.getpixel((256, 30)) == 255 and logo_image.getpixel((left + 5, 30)) == 0


def test_tall_logo_is_capped_in_height(capture, tmp_path):
    from device_drivers.printer import LOGO_MAX_HEIGHT

    logo = make_logo(tmp_path / "logo.png", (400, 1600))

    logo_image = ep.images(print_one(capture, slip=make_slip(logo=logo)))[0]

    left, top, right, bottom = ep.ink_box(logo_image)
    assert bottom - top == LOGO_MAX_HEIGHT
    assert right - left == 400 * LOGO_MAX_HEIGHT // 1600


@pytest.mark.parametrize(("suffix", "mode"), [(".jpg", "RGB"), (".bmp", "RGB"), (".png", "L")])
def test_jpeg_bmp_and_greyscale_logos(capture, tmp_path, suffix, mode):
    logo = make_logo(tmp_path / f"logo{suffix}", (160, 40), mode=mode)

    logo_image = ep.images(print_one(capture, slip=make_slip(logo=logo)))[0]

    left, top, right, bottom = ep.ink_box(logo_image)
    assert (right - left, bottom - top) == (160, 40)


def test_transparent_logo_background_is_paper(capture, tmp_path):
    from PIL import Image

    path = tmp_path / "logo.png"
    image = Image.new("RGBA", (100, 50), (0, 0, 0, 0))  # transparent black
    image.paste((0, 0, 0, 255), (20, 10, 80, 40))
    image.save(path)

    logo_image = ep.images(print_one(capture, slip=make_slip(logo=str(path))))[0]

    left, top, right, bottom = ep.ink_box(logo_image)
    assert (right - left, bottom - top) == (60, 30)


@pytest.mark.parametrize("what", ["missing", "not-an-image", "directory"])
def test_bad_logo_is_left_off_and_the_card_still_prints(capture, tmp_path, caplog, what):
    path = tmp_path / "logo.png"
    if what == "not-an-image":
        path.write_bytes(b"\x89PNG but not really")
    elif what == "directory":
        path.mkdir()

    job = print_one(capture, slip=make_slip(logo=str(path)))

    assert ep.print_order(job)[0] == ("text", SHOP)
    assert ep.decode_qr_codes(job) == [QR_TEXT]
    assert len(ep.images(job)) == 1
    assert f"logo {path} left off the card slip" in caplog.text


def test_truncated_logo_is_left_off(capture, tmp_path, caplog):
    # the header reads fine (Image.open is lazy); the pixels do not
    logo = make_logo(tmp_path / "logo.png", (400, 200))
    Path(logo).write_bytes(Path(logo).read_bytes()[:120])

    job = print_one(capture, slip=make_slip(logo=logo))

    assert ep.print_order(job)[0] == ("text", SHOP)
    assert "left off the card slip" in caplog.text


def test_replaced_logo_file_is_read_again(capture, tmp_path):
    path = tmp_path / "logo.png"
    printer = open_printer(capture.uri)
    make_logo(path, (100, 50))
    printer.print_card(make_slip(logo=str(path)))
    make_logo(path, (300, 20))
    printer.print_card(make_slip(logo=str(path)))
    first, second = capture.wait_for_jobs(2)

    boxes = [ep.ink_box(ep.images(job)[0]) for job in (first, second)]
    assert [(r - lft, b - t) for lft, t, r, b in boxes] == [(100, 50), (300, 20)]


def test_logo_follows_image_mode(capture, tmp_path):
    logo = make_logo(tmp_path / "logo.png", (96, 48))

    job = print_one(capture, "qr=native&image=column", make_slip(logo=logo))

    assert "ESC *" in {tok.kind for tok in ep.tokenize(job)}
    (logo_image,) = ep.images(job)
    left, top, right, bottom = ep.ink_box(logo_image)
    assert (right - left, bottom - top) == (96, 48)
    assert ep.decode_qr_codes(job) == [QR_TEXT]


# -- profiles and widths -------------------------------------------------------------------------
LONG_LINE = "word " * 30


PAPERS = [
    ("", 512, 42),
    ("profile=TM-T88V", 512, 42),
    ("profile=TM-T20II", 576, 48),
    ("profile=POS-5890", 384, 32),
    ("profile=default&width=576", 576, 48),
    ("profile=TM-T88V&width=576", 576, 48),
    ("profile=TM-T20II&width=384", 384, 32),
]


@pytest.mark.parametrize(
    ("query", "width", "columns", "qr"),
    [
        (*paper, qr)
        for paper in PAPERS
        for qr in ("image", "native")
        if not (qr == "native" and "POS-5890" in paper[0])  # no native QR: refused
    ],
)
def test_profile_and_width_set_the_paper_and_the_qr_decodes(
    capture, tmp_path, query, width, columns, qr
):
    logo = make_logo(tmp_path / "logo.png", (2000, 200))
    query = "&".join(filter(None, [query, f"qr={qr}"]))

    job = print_one(capture, query, make_slip(first_name="Ana", lines=(LONG_LINE,), logo=logo))

    found = ep.images(job)
    assert found[0].width == width  # the logo, scaled to the paper
    assert ep.ink_box(found[0])[2] - ep.ink_box(found[0])[0] == width
    if qr == "image":
        assert found[1].width == width  # the QR, centred on the paper
        left, _, right, _ = ep.ink_box(found[1])
        assert abs((left + right) / 2 - width / 2) <= 8
    else:
        assert len(found) == 1 and ep.native_qr_payloads(job) == [QR_TEXT.encode()]
    assert ep.decode_qr_codes(job) == [QR_TEXT]
    wrapped = [text for kind, text in ep.print_order(job) if kind == "text" and "word" in text]
    assert max(len(line) for line in wrapped) <= columns
    assert max(len(line) for line in wrapped) > columns - 5  # and used


def test_narrow_width_makes_smaller_qr_modules(capture):
    job = print_one(capture, "width=200&qr=native")

    qr_commands = {
        tok.params[:2]: tok.params[2:] for tok in ep.tokenize(job) if tok.kind == "GS ( k"
    }
    # version 3 (29 modules) + 2 border modules: 200 // 31 = 6 dots a module
    assert qr_commands[b"1C"] == b"\x06"
    assert ep.decode_qr_codes(job) == [QR_TEXT]


def test_width_of_one_printer_does_not_change_another_of_the_same_profile(capture):
    print_one(capture, "profile=TM-T88V&width=576")
    capture.clear()

    job = print_one(capture, "profile=TM-T88V")

    (qr_image,) = ep.images(job)
    assert qr_image.width == 512


def test_file_printer_honours_profile_and_width(tmp_path):
    out = tmp_path / "printer.bin"
    logo = make_logo(tmp_path / "logo.png", (1000, 100))

    open_printer(f"file:{out}?profile=POS-5890").print_card(make_slip(logo=logo))

    data = out.read_bytes()
    assert [image.width for image in ep.images(data)] == [384, 384]
    assert ep.decode_qr_codes(data) == [QR_TEXT]


def test_unknown_profile_is_refused_when_the_printer_is_made():
    with pytest.raises(DriverError) as caught:
        open_printer("escpos:net:192.0.2.10:9100?profile=TM-T99")

    message = str(caught.value)
    assert not isinstance(caught.value, PrinterError)
    assert "unknown printer profile 'TM-T99'" in message
    assert "TM-T20II" in message and "POS-5890" in message
    assert "docs/PRINTERS.md" in message


def test_paper_out_with_a_logo_sends_nothing_but_the_query(capture, tmp_path):
    capture.paper = "out"
    logo = make_logo(tmp_path / "logo.png", (100, 50))

    with pytest.raises(PrinterError) as caught:
        open_printer(capture.uri + "?status=1&profile=TM-T20II").print_card(
            make_slip(logo=logo)
        )

    assert caught.value.reason == "paper-out"
    assert capture.wait_for_jobs(1) == [PAPER_STATUS_QUERY]


def test_offline_with_a_logo_is_offline(tmp_path):
    logo = make_logo(tmp_path / "logo.png", (100, 50))
    printer = open_printer(f"escpos:net:127.0.0.1:{closed_port()}?timeout=2&profile=TM-T20II")

    with pytest.raises(PrinterError) as caught:
        printer.print_card(make_slip(logo=logo))

    assert caught.value.reason == "offline"


def test_every_printer_uri_in_docs_printers_md_is_accepted():
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "PRINTERS.md").read_text()
    uris = re.findall(r"`((?:escpos|file):[^`\s]+)`", text)
    assert len(uris) >= 8
    for uri in uris:
        if uri.endswith(":"):
            continue  # a transport named in the text, e.g. `escpos:net:`
        uri = uri.replace("VID:PID", "0416:5011")  # the placeholder of the generic printers
        parse_uri(uri)  # raises DriverError, with the URI in its message
