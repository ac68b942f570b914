"""Read an ESC/POS byte stream back: commands, text lines, raster images and QR codes.

Written from the ESC/POS command reference, independently of python-escpos, so a test that
prints through python-escpos and reads the bytes back with this module checks the real
output. It knows the commands python-escpos emits plus the common ones around them; an
unknown ``ESC``/``GS``/``FS``/``DLE`` command raises ``EscposParseError`` (a test should see
bytes it does not understand rather than skip them).

Main entry points:

- ``tokenize(data)`` -> list of ``Token`` (text runs and commands);
- ``text_lines(data)`` / ``styled_lines(data)`` -> the printed lines of text, decoded with the
  code page selected by ``ESC t`` at that point;
- ``images(data)`` -> the raster images (``GS v 0``, ``GS ( L`` graphics, ``ESC *`` columns)
  as PIL images, black ink = black pixels on white;
- ``native_qr_payloads(data)`` -> the payloads stored with ``GS ( k`` fn 80 (``1 P 0``);
- ``decode_qr_codes(data)`` -> every QR of the stream as text, native and image ones, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image, ImageOps

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10

#: ``ESC t n`` code page numbers (Epson numbering) -> Python codec.
CODE_PAGES: dict[int, str] = {
    0: "cp437",
    2: "cp850",
    3: "cp860",
    4: "cp863",
    5: "cp865",
    13: "cp857",
    14: "cp737",
    15: "iso8859_7",
    16: "cp1252",
    17: "cp866",
    18: "cp852",
    19: "cp858",
    32: "cp720",
    33: "cp775",
    34: "cp855",
    35: "cp861",
    36: "cp862",
    37: "cp864",
    38: "cp869",
    39: "iso8859_2",
    40: "iso8859_15",
    44: "cp1125",
    45: "cp1250",
    46: "cp1251",
    47: "cp1253",
    48: "cp1254",
    49: "cp1255",
    50: "cp1256",
    51: "cp1257",
    52: "cp1258",
    53: "kz1048",
}

# Commands with a fixed number of parameter bytes after the 2-byte prefix.
_ESC_FIXED = {
    ord("@"): 0, ord("2"): 0, ord("<"): 0, ord("i"): 0, ord("m"): 0,
    ord("!"): 1, ord("E"): 1, ord("G"): 1, ord("-"): 1, ord("a"): 1, ord("t"): 1,
    ord("M"): 1, ord("{"): 1, ord("V"): 1, ord("d"): 1, ord("J"): 1, ord("K"): 1,
    ord("e"): 1, ord("3"): 1, ord("+"): 1, ord("="): 1, ord("R"): 1, ord("r"): 1,
    ord("U"): 1, ord(" "): 1, ord("%"): 1, ord("c"): 2, ord("$"): 2, ord("\\"): 2,
    ord("p"): 3,
}  # fmt: skip
_GS_FIXED = {
    ord("!"): 1, ord("B"): 1, ord("b"): 1, ord("h"): 1, ord("w"): 1, ord("H"): 1,
    ord("f"): 1, ord("a"): 1, ord("r"): 1, ord("I"): 1, ord("L"): 2, ord("W"): 2,
    ord("P"): 2, ord("$"): 2, ord("\\"): 2, ord(":"): 0,
}  # fmt: skip
_FS_FIXED = {ord("."): 0, ord("&"): 0, ord("C"): 1, ord("!"): 1, ord("-"): 1, ord("W"): 1}
_SINGLE = {0x0A: "LF", 0x0D: "CR", 0x09: "HT", 0x0C: "FF", 0x18: "CAN", 0x00: "NUL"}


class EscposParseError(ValueError):
    """The stream holds a command this parser does not know, or is cut in the middle."""


class _Incomplete(Exception):
    """A command runs past the end of the buffer (used by ``scan``)."""


@dataclass(frozen=True)
class Token:
    """One element of the stream.

    Attributes:
        offset: where it starts in the stream.
        raw: its bytes.
        kind: ``"text"`` for printable bytes, else the command name, e.g. ``"ESC t"``,
            ``"GS v 0"``, ``"GS ( k"``, ``"DLE EOT"``, ``"LF"``.
        params: the command's bytes after its name (for ``GS ( k``/``GS ( L``: after pL pH).
    """

    offset: int
    raw: bytes
    kind: str
    params: bytes = b""


@dataclass
class TextLine:
    """One printed line of text and the style in force at its first character."""

    text: str
    bold: bool = False
    width: int = 1
    height: int = 1
    align: str = "left"
    code_pages: set[int] = field(default_factory=set)


def _need(data: bytes, end: int) -> None:
    if end > len(data):
        raise _Incomplete


def _u16(data: bytes, i: int) -> int:
    _need(data, i + 2)
    return data[i] | (data[i + 1] << 8)


def _command(data: bytes, i: int) -> tuple[str, int, int]:
    """Return ``(kind, params_start, end)`` of the command at ``data[i]``."""
    b = data[i]
    if b in _SINGLE:
        return _SINGLE[b], i + 1, i + 1
    _need(data, i + 2)
    c = data[i + 1]
    name = {ESC: "ESC", GS: "GS", FS: "FS", DLE: "DLE"}.get(b)
    if name is None:
        raise EscposParseError(f"control byte {b:#04x} at offset {i}")
    kind = f"{name} {chr(c)}" if 0x20 <= c < 0x7F else f"{name} {c:#04x}"
    if b == DLE:
        if c in (0x04, 0x05):  # DLE EOT n / DLE ENQ n; EOT 7/8 carry one more byte
            _need(data, i + 3)
            n = data[i + 2]
            kind = "DLE EOT" if c == 0x04 else "DLE ENQ"
            end = i + 4 if c == 0x04 and n in (7, 8) else i + 3
            _need(data, end)
            return kind, i + 2, end
        if c == 0x14:  # DLE DC4 fn ...: fn 1 (pulse) m t, fn 2 (power off) 1 8, fn 8 ...
            _need(data, i + 3)
            fn = data[i + 2]
            length = {1: 2, 2: 2, 3: 3, 7: 1, 8: 7}.get(fn)
            if length is None:
                raise EscposParseError(f"DLE DC4 {fn} at offset {i}")
            _need(data, i + 3 + length)
            return "DLE DC4", i + 2, i + 3 + length
        raise EscposParseError(f"unknown DLE command {c:#04x} at offset {i}")
    if b == ESC:
        if c == ord("*"):  # ESC * m nL nH d1..dk
            _need(data, i + 5)
            m, columns = data[i + 2], _u16(data, i + 3)
            per_column = 3 if m in (32, 33) else 1
            end = i + 5 + columns * per_column
            _need(data, end)
            return "ESC *", i + 2, end
        if c == ord("D"):  # ESC D n1 .. nk NUL: horizontal tab stops
            j = data.find(b"\x00", i + 2)
            if j < 0:
                raise _Incomplete
            return kind, i + 2, j + 1
        if c in _ESC_FIXED:
            end = i + 2 + _ESC_FIXED[c]
            _need(data, end)
            return kind, i + 2, end
        raise EscposParseError(f"unknown command ESC {c:#04x} at offset {i}")
    if b == GS:
        if c == ord("v"):  # GS v 0 m xL xH yL yH d...
            _need(data, i + 8)
            if data[i + 2] != ord("0"):
                raise EscposParseError(f"GS v {data[i + 2]:#04x} at offset {i}")
            end = i + 8 + _u16(data, i + 4) * _u16(data, i + 6)
            _need(data, end)
            return "GS v 0", i + 3, end
        if c == ord("("):  # GS ( X pL pH ...
            _need(data, i + 5)
            end = i + 5 + _u16(data, i + 3)
            _need(data, end)
            return f"GS ( {chr(data[i + 2])}", i + 5, end
        if c == ord("8") or c == ord("D"):  # GS 8 L p1 p2 p3 p4 ... (large graphics)
            _need(data, i + 7)
            size = int.from_bytes(data[i + 3 : i + 7], "little")
            end = i + 7 + size
            _need(data, end)
            return f"GS {chr(c)} {chr(data[i + 2])}", i + 7, end
        if c == ord("V"):  # GS V m [n]
            _need(data, i + 3)
            end = i + 3 if data[i + 2] in (0, 1, 48, 49) else i + 4
            _need(data, end)
            return "GS V", i + 2, end
        if c == ord("k"):  # GS k m ...: m 0..6 NUL-terminated, m 65..79 length-prefixed
            _need(data, i + 3)
            m = data[i + 2]
            if m <= 6:
                j = data.find(b"\x00", i + 3)
                if j < 0:
                    raise _Incomplete
                return "GS k", i + 2, j + 1
            _need(data, i + 4)
            end = i + 4 + data[i + 3]
            _need(data, end)
            return "GS k", i + 2, end
        if c in _GS_FIXED:
            end = i + 2 + _GS_FIXED[c]
            _need(data, end)
            return kind, i + 2, end
        raise EscposParseError(f"unknown command GS {c:#04x} at offset {i}")
    if c in _FS_FIXED:
        end = i + 2 + _FS_FIXED[c]
        _need(data, end)
        return kind, i + 2, end
    raise EscposParseError(f"unknown command FS {c:#04x} at offset {i}")


def _is_text(b: int) -> bool:
    return b >= 0x20


def scan(data: bytes, start: int = 0) -> tuple[list[Token], int]:
    """Tokenize as much of ``data[start:]`` as is complete.

    For a stream still arriving: the last command may be cut; it is left for the next call.

    Args:
        data: the bytes received so far.
        start: where to begin (the ``end`` returned by the previous call).

    Returns:
        ``(tokens, end)``: the complete tokens and the offset just after the last of them.

    Raises:
        EscposParseError: an unknown command.
    """
    tokens: list[Token] = []
    i = start
    while i < len(data):
        if _is_text(data[i]):
            j = i
            while j < len(data) and _is_text(data[j]):
                j += 1
            tokens.append(Token(i, data[i:j], "text", data[i:j]))
            i = j
            continue
        try:
            kind, params_start, end = _command(data, i)
        except _Incomplete:
            break
        tokens.append(Token(i, data[i:end], kind, data[params_start:end]))
        i = end
    return tokens, i


def tokenize(data: bytes) -> list[Token]:
    """Tokenize a complete stream.

    Raises:
        EscposParseError: an unknown command, or a command cut by the end of the stream.
    """
    tokens, end = scan(data)
    if end != len(data):
        raise EscposParseError(f"stream ends inside a command at offset {end}")
    return tokens


def styled_lines(data: bytes) -> list[TextLine]:
    """Return the printed lines (split at LF), decoded with the code page in force.

    Bytes of a code page this module has no codec for decode to U+FFFD. Lines that print no
    text at all (feeds around images) are left out.
    """
    lines: list[TextLine] = []
    page = 0
    bold = False
    width = height = 1
    align = "left"
    current: TextLine | None = None
    for tok in tokenize(data):
        if tok.kind == "text":
            codec = CODE_PAGES.get(page)
            text = (
                tok.params.decode(codec, errors="replace")
                if codec
                else "".join(chr(b) if b < 0x80 else "\ufffd" for b in tok.params)
            )
            if current is None:
                current = TextLine("", bold, width, height, align)
            current.text += text
            current.code_pages.add(page)
        elif tok.kind == "LF":
            if current is not None:
                lines.append(current)
            current = None
        elif tok.kind == "ESC t":
            page = tok.params[0]
        elif tok.kind == "ESC @":
            page, bold, width, height, align = 0, False, 1, 1, "left"
        elif tok.kind == "ESC E":
            bold = bool(tok.params[0] & 1)
        elif tok.kind == "ESC !":
            n = tok.params[0]
            bold = bool(n & 0x08)
            width, height = (2 if n & 0x20 else 1), (2 if n & 0x10 else 1)
        elif tok.kind == "GS !":
            n = tok.params[0]
            width, height = (n >> 4) + 1, (n & 0x0F) + 1
        elif tok.kind == "ESC a":
            align = {0: "left", 1: "center", 2: "right", 48: "left", 49: "center", 50: "right"}[
                tok.params[0]
            ]
    if current is not None:
        lines.append(current)
    return lines


def text_lines(data: bytes) -> list[str]:
    """Return the text of each printed line (see ``styled_lines``)."""
    return [line.text for line in styled_lines(data)]


def _raster(width_bytes: int, height: int, bits: bytes) -> Image.Image:
    # ESC/POS: bit 1 = dot printed (black), MSB = leftmost; PIL "1;I" reads 1 as black.
    return Image.frombytes("1", (width_bytes * 8, height), bytes(bits), "raw", "1;I").convert("L")


def _columns(strips: list[bytes], columns: int) -> Image.Image:
    """Rebuild an ``ESC *`` 24-dot image from its strips (3 bytes per column, MSB on top)."""
    image = Image.new("L", (columns, 24 * len(strips)), 255)
    pixels = image.load()
    for s, strip in enumerate(strips):
        for x in range(columns):
            for byte_index in range(3):
                byte = strip[3 * x + byte_index]
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        pixels[x, 24 * s + 8 * byte_index + bit] = 0
    return image


def images(data: bytes) -> list[Image.Image]:
    """Rebuild the raster images of the stream, in order, as greyscale PIL images.

    ``GS v 0`` and ``GS ( L`` fn 112 (store, printed by fn 50) images that follow one another
    directly with the same width are joined (python-escpos splits tall images); ``ESC *``
    strips separated only by LF / line-spacing commands form one image. Only 24-dot ``ESC *``
    (modes 32/33) is rebuilt.
    """
    result: list[Image.Image] = []
    pending: Image.Image | None = None  # GS v 0 / GS ( L image that may continue
    strips: list[bytes] = []
    strip_columns = 0

    def flush_strips() -> None:
        nonlocal strips, strip_columns
        if strips:
            result.append(_columns(strips, strip_columns))
        strips, strip_columns = [], 0

    def add_raster(image: Image.Image) -> None:
        nonlocal pending
        if pending is not None and pending.width == image.width:
            joined = Image.new("L", (image.width, pending.height + image.height), 255)
            joined.paste(pending, (0, 0))
            joined.paste(image, (0, pending.height))
            pending = joined
        else:
            if pending is not None:
                result.append(pending)
            pending = image

    for tok in tokenize(data):
        if tok.kind == "GS v 0":
            p = tok.params  # m xL xH yL yH d...
            add_raster(_raster(p[1] | p[2] << 8, p[3] | p[4] << 8, p[5:]))
            continue
        if tok.kind == "GS ( L" and tok.params[:2] == b"0p":
            # m fn a bx by c xL xH yL yH d...
            p = tok.params[2:]
            width, height = p[4] | p[5] << 8, p[6] | p[7] << 8
            add_raster(_raster((width + 7) // 8, height, p[8:]).crop((0, 0, width, height)))
            continue
        if tok.kind == "GS ( L" and tok.params[:2] == b"02":  # print the stored graphics
            continue
        if tok.kind == "ESC *":
            m, columns = tok.params[0], tok.params[1] | tok.params[2] << 8
            if m not in (32, 33):
                raise EscposParseError(f"ESC * mode {m} (8-dot) is not rebuilt")
            if strips and columns != strip_columns:
                flush_strips()
            strips.append(tok.params[3:])
            strip_columns = columns
            continue
        if tok.kind in ("LF", "ESC 3", "ESC 2") and strips:
            continue
        flush_strips()
        if pending is not None:
            result.append(pending)
            pending = None
    flush_strips()
    if pending is not None:
        result.append(pending)
    return result


def native_qr_payloads(data: bytes) -> list[bytes]:
    """Return the payloads of ``GS ( k`` QR "store data" commands (cn ``1``, fn ``P``, m ``0``)."""
    return [
        tok.params[3:]
        for tok in tokenize(data)
        if tok.kind == "GS ( k" and tok.params[:3] == b"1P0"
    ]


def _read_qr(image: Image.Image) -> list[str]:
    import zxingcpp

    padded = ImageOps.expand(image.convert("L"), border=32, fill=255)
    for candidate in (padded, ImageOps.invert(padded)):
        found = zxingcpp.read_barcodes(candidate, formats=zxingcpp.BarcodeFormat.QRCode)
        if found:
            return [barcode.text for barcode in found]
    return []


def decode_qr_codes(data: bytes) -> list[str]:
    """Decode every QR code in an ESC/POS stream.

    Native codes (``GS ( k``) are read from their payload (UTF-8); image codes are
    rasterised back and decoded with zxing-cpp (with a white quiet zone added, and inverted
    if nothing is found the first time).

    Args:
        data: the bytes sent to the printer.

    Returns:
        The decoded texts: native payloads first, then image codes in stream order.

    Raises:
        EscposParseError: the stream cannot be parsed.
    """
    texts = [payload.decode("utf-8", errors="replace") for payload in native_qr_payloads(data)]
    for image in images(data):
        texts.extend(_read_qr(image))
    return texts


_IMAGE_KINDS = ("GS v 0", "ESC *")
_BETWEEN_IMAGE_PARTS = ("LF", "ESC 3", "ESC 2")


def print_order(data: bytes) -> list[tuple[str, str]]:
    """Return what the stream prints, top to bottom: ``(kind, value)`` pairs.

    ``("image", "")`` for each image (in the order of ``images(data)``), ``("qr", payload)``
    for a native QR code, ``("text", line)`` for each line of text (as ``text_lines``), and
    ``("cut", "")`` for ``GS V``. Image parts that ``images`` joins are one image here too.

    Raises:
        EscposParseError: the stream cannot be parsed.
    """
    order: list[tuple[str, str]] = []
    page = 0
    line: str | None = None
    in_image = False
    for tok in tokenize(data):
        is_image = tok.kind in _IMAGE_KINDS or (
            tok.kind == "GS ( L" and tok.params[:2] in (b"0p", b"02")
        )
        if is_image:
            if not in_image:
                order.append(("image", ""))
            in_image = True
            continue
        if in_image and tok.kind in _BETWEEN_IMAGE_PARTS:
            continue
        in_image = False
        if tok.kind == "text":
            codec = CODE_PAGES.get(page)
            text = (
                tok.params.decode(codec, errors="replace")
                if codec
                else "".join(chr(b) if b < 0x80 else "\ufffd" for b in tok.params)
            )
            line = (line or "") + text
        elif tok.kind == "LF":
            if line is not None:
                order.append(("text", line))
            line = None
        elif tok.kind in ("ESC t", "ESC @"):
            page = tok.params[0] if tok.kind == "ESC t" else 0
        elif tok.kind == "GS ( k" and tok.params[:3] == b"1P0":
            order.append(("qr", tok.params[3:].decode("utf-8", errors="replace")))
        elif tok.kind == "GS V":
            order.append(("cut", ""))
    if line is not None:
        order.append(("text", line))
    return order


def ink_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """Return the bounding box ``(left, top, right, bottom)`` of the printed dots, or None."""
    return image.convert("L").point(lambda v: 255 - v).getbbox()
