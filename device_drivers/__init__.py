"""Hardware behind one interface per kind of device, chosen by a URI string.

``open_reader("pcsc:ACR122")``, ``open_reader("nfcpy:usb")``,
``open_reader("hid:/dev/input/event3")``, ``open_reader("sim:")``;
``open_writer("pcsc:ACR122")`` (writes card URLs), ``open_printer("escpos:net:192.0.2.10:9100")``,
``open_printer("file:/tmp/slip.bin")``. Hardware libraries (pyscard, nfcpy, evdev,
python-escpos) are imported only inside the driver module that needs them, so a
till without a PC/SC stack can still run a ``hid:`` reader.
"""

from device_drivers.base import (
    CardInUse,
    CardReadOnly,
    CardSlip,
    CardTooSmall,
    CardWriter,
    DriverError,
    NoCard,
    Printer,
    PrinterError,
    ReadBackMismatch,
    Reader,
    ReaderError,
    ReaderUnavailable,
    Tap,
    WriteError,
    WriteInterrupted,
    WriterUnavailable,
    WrittenCard,
    open_printer,
    open_reader,
    open_writer,
)

__all__ = [
    "CardInUse",
    "CardReadOnly",
    "CardSlip",
    "CardTooSmall",
    "CardWriter",
    "DriverError",
    "NoCard",
    "Printer",
    "PrinterError",
    "ReadBackMismatch",
    "Reader",
    "ReaderError",
    "ReaderUnavailable",
    "Tap",
    "WriteError",
    "WriteInterrupted",
    "WriterUnavailable",
    "WrittenCard",
    "open_printer",
    "open_reader",
    "open_writer",
]
