"""Hardware behind one interface per kind of device, chosen by a URI string.

``open_reader("pcsc:ACR122")``, ``open_reader("nfcpy:usb")``,
``open_reader("hid:/dev/input/event3")``, ``open_reader("sim:")``;
``open_printer("escpos:net:192.0.2.10:9100")``,
``open_printer("file:/tmp/slip.bin")``. Hardware libraries (pyscard, nfcpy, evdev,
python-escpos) are imported only inside the driver module that needs them, so a
till without a PC/SC stack can still run a ``hid:`` reader.
"""

from device_drivers.base import (
    CardSlip,
    DriverError,
    Printer,
    PrinterError,
    Reader,
    ReaderError,
    ReaderUnavailable,
    Tap,
    open_printer,
    open_reader,
)

__all__ = [
    "CardSlip",
    "DriverError",
    "Printer",
    "PrinterError",
    "Reader",
    "ReaderError",
    "ReaderUnavailable",
    "Tap",
    "open_printer",
    "open_reader",
]
