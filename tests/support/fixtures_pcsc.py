"""pytest fixtures for the PC/SC stack: a private pcscd with vpcd, and virtual cards.

Load with ``pytest_plugins = ["tests.support.fixtures_pcsc"]`` in the root conftest, or
``python -m pytest -p tests.support.fixtures_pcsc``.

- ``pcscd`` (session): a running pcscd (``tests.support.pcscd.Pcscd``: ``.port0``/``.port1``
  23040/23041, ``.reader0``/``.reader1`` "Virtual PCD 00 00"/"Virtual PCD 00 01", ``.log()``).
  Skips when pcscd or vpcd is not installed, or when not root.
- ``vcard`` (function): a factory ``vcard(uid=..., ndef=..., cc=..., *, responses=...,
  port=...) -> VpcdCard`` that puts a Type 4 tag on reader 0 (or on ``port``) and removes
  every card it made at teardown. Its cards' ``insert``/``remove`` return once pcscd itself
  reports the card present/absent.
- ``wait_card_state(reader, present, timeout)``: block until pcscd reports that state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest
from smartcard.scard import (
    SCARD_E_TIMEOUT,
    SCARD_S_SUCCESS,
    SCARD_SCOPE_USER,
    SCARD_STATE_CHANGED,
    SCARD_STATE_PRESENT,
    SCARD_STATE_UNAWARE,
    SCardEstablishContext,
    SCardGetErrorMessage,
    SCardGetStatusChange,
    SCardReleaseContext,
)

from tests.support.pcscd import Pcscd, missing_requirements, running_pcscd
from tests.support.vcard import VirtualCard, VpcdCard

DEFAULT_UID = bytes.fromhex("04A1B2C3D4E5F6")


def wait_card_state(reader: str, present: bool, timeout: float = 5.0) -> None:
    """Block until pcscd reports a card on ``reader`` (``present``) or none.

    Raises:
        TimeoutError: the state did not come within ``timeout`` seconds.
        RuntimeError: pcscd failed.
    """
    hresult, context = SCardEstablishContext(SCARD_SCOPE_USER)
    if hresult != SCARD_S_SUCCESS:
        raise RuntimeError(f"pcscd: {SCardGetErrorMessage(hresult)}")
    try:
        state, deadline = SCARD_STATE_UNAWARE, time.monotonic() + timeout
        while True:
            wait_ms = max(int((deadline - time.monotonic()) * 1000), 0)
            hresult, states = SCardGetStatusChange(context, wait_ms, [(reader, state)])
            if hresult == SCARD_E_TIMEOUT:
                raise TimeoutError(
                    f"pcscd never saw a card {'on' if present else 'leave'} "
                    f"{reader!r} within {timeout} s"
                )
            if hresult != SCARD_S_SUCCESS:
                raise RuntimeError(f"pcscd: {SCardGetErrorMessage(hresult)}")
            state = states[0][1] & ~SCARD_STATE_CHANGED
            if bool(state & SCARD_STATE_PRESENT) == present:
                return
    finally:
        SCardReleaseContext(context)


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    """A private pcscd whose only readers are vpcd's two slots; stopped after the session."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI"):  # CI installs the stack: a skip there would hide a gap
            pytest.fail(reason)
        pytest.skip(reason)
    with running_pcscd(tmp_path_factory.mktemp("pcscd")) as daemon:
        yield daemon


@pytest.fixture
def vcard(pcscd: Pcscd) -> Iterator[Callable[..., VpcdCard]]:
    """Factory: ``vcard(uid, ndef, cc=None, *, responses=None, port=None)`` -> inserted card.

    ``ndef=None`` is a card without an NDEF application; ``responses`` maps exact command
    APDUs to the (garbage) answers to give, ``None`` to leave the field instead. The card is
    on the reader when this returns (pcscd reports it present); ``card.remove()`` /
    ``card.insert(pcscd.port0)`` move it and also wait for pcscd. A new card on a slot takes
    the place of the previous one there.
    """
    readers = {pcscd.port0: pcscd.reader0, pcscd.port1: pcscd.reader1}
    cards: list[VpcdCard] = []

    def settle(port: int, present: bool) -> None:
        wait_card_state(readers[port], present)

    def insert(
        uid: bytes = DEFAULT_UID,
        ndef: bytes | None = None,
        cc: bytes | None = None,
        *,
        responses: dict[bytes, bytes | None] | None = None,
        port: int | None = None,
    ) -> VpcdCard:
        port = pcscd.port0 if port is None else port
        for old in cards:  # one card per slot: the new one takes the old one's place
            if old.port == port:
                old.remove()
        card = VpcdCard(
            VirtualCard(uid, ndef, cc, responses=responses), host=pcscd.host, on_change=settle
        )
        cards.append(card)
        card.insert(port)
        return card

    yield insert
    for card in cards:
        card.remove()
