"""Coverage-guided fuzzing (atheris) of the parsers that take bytes from outside; not in the
test suite (tests/test_fuzz_parsers.py holds the bounded hypothesis properties).

    pip install atheris
    python bench/fuzz/fuzz_parsers.py token  -max_total_time=600
    python bench/fuzz/fuzz_parsers.py sun    -atheris_runs=1000000 bench/fuzz/corpus-sun

Targets: ``token``, ``sun``, ``ndef``, ``t2t``, ``t4t``, ``hid``, ``printer-uri``. Each feeds
the input to one parser; any exception other than the parser's documented error type is a
crash, which atheris reports with the input that caused it (saved as ``crash-*``). Extra
arguments are libFuzzer's (a corpus folder, ``-max_total_time``, ``-jobs`` ...).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# only the parsers and ndeflib: instrumenting Flask and the rest would take minutes
with atheris.instrument_imports(include=["server.cards", "device_drivers", "ndef"]):
    from device_drivers import hid, ndefmsg, t2t, t4t
    from device_drivers.base import DriverError, ReaderError
    from device_drivers.printer import parse_uri
    from server.cards import sun, token

KEY = bytes(range(32))
ZERO = bytes(16)


def _text(data: bytes) -> str:
    return atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))


def fuzz_token(data: bytes) -> None:
    with contextlib.suppress(token.InvalidToken):
        token.decode(_text(data), {1: KEY})


def fuzz_sun(data: bytes) -> None:
    with contextlib.suppress(sun.InvalidSun):
        sun.verify(_text(data), ZERO, ZERO)


def fuzz_ndef(data: bytes) -> None:
    with contextlib.suppress(ReaderError):
        ndefmsg.first_uri(data)


def fuzz_t2t(data: bytes) -> None:
    memory = bytes(12) + data

    def read_pages(page: int, what: str) -> bytes | None:
        chunk = memory[page * 4:page * 4 + 16]
        return chunk if len(chunk) == 16 else None

    with contextlib.suppress(ReaderError):
        t2t.read_ndef_tlv(read_pages)


def fuzz_t4t(data: bytes) -> None:
    with contextlib.suppress(ReaderError):
        t4t.parse_cc(data)


def fuzz_hid(data: bytes) -> None:
    decoder = hid.KeyDecoder("fr", stale_after=float("inf"))
    for i in range(0, len(data) - 1, 2):
        with contextlib.suppress(ReaderError):
            decoder.feed(data[i], data[i + 1] % 3, at=0.0)


def fuzz_printer_uri(data: bytes) -> None:
    with contextlib.suppress(DriverError):
        parse_uri(_text(data))


TARGETS = {"token": fuzz_token, "sun": fuzz_sun, "ndef": fuzz_ndef, "t2t": fuzz_t2t,
           "t4t": fuzz_t4t, "hid": fuzz_hid, "printer-uri": fuzz_printer_uri}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
