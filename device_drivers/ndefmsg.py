"""NDEF messages as the cards carry them: one URI record holding the card URL."""

from __future__ import annotations

import ndef  # ndeflib, nfcpy's own NDEF library: pure Python, no hardware

from device_drivers.base import ReaderError


def uri_message(url: str) -> bytes:
    """Encode ``url`` as an NDEF message with one URI record (``https://`` -> prefix 0x04)."""
    return b"".join(ndef.message_encoder([ndef.UriRecord(url)]))


def first_uri(message: bytes) -> str:
    """Return the URI of the first URI record (or the text of the first text record).

    Raises:
        ReaderError: the bytes are not a well-formed NDEF message or hold no URI/text.
    """
    try:
        records = list(ndef.message_decoder(message, errors="strict"))
    except (ndef.DecodeError, ValueError, TypeError) as exc:
        raise ReaderError(f"malformed NDEF message: {exc}") from exc
    for record in records:
        if isinstance(record, ndef.UriRecord):
            return record.iri
        if isinstance(record, ndef.TextRecord):
            return record.text
    raise ReaderError("NDEF message holds no URI or text record")
