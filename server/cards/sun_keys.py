"""NTAG 424 DNA keys: the SUN key file, per-card keys diversified from a master key, and the
card layout a shop writes (docs/CARDS-424.md).

Key file (JSON, mode 0600, outside both databases; ``SUN_KEYS_FILE``, created on first use)::

    {"current": 1, "sets": {"1": {"meta_read": "<32 hex>", "master": "<32 hex>"}},
     "retired": []}

A key set is the shared K_SDMMetaRead (the server must decrypt the PICC data before it knows
which card it is) and a master key from which every other key of a card is derived by NXP
AN10922 AES-128 diversification with the input ``UID || key number || b"loyalty/424"``.
Every set not retired verifies (the current one first); new cards get the current one.

Run ``python -m server.cards.sun_keys --help`` with the service's environment for the
provisioning commands (``card-keys``, ``layout``, ``rotate``, ``retire``).
"""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from server.cards import sun
from server.secrets_file import load_or_create_json, write_json

SYSTEM_ID = b"loyalty/424"  # AN10922's "system identifier": keys of this programme only
META_READ_KEY_NO, FILE_READ_KEY_NO = 1, 2
KEY_NUMBERS = range(5)  # an NTAG 424 DNA application has keys 0..4


# --------------------------------------------------------------------------- AN10922


def _dbl(block: bytes) -> bytes:
    """Multiply by x in GF(2^128): CMAC's subkey step."""
    n = int.from_bytes(block, "big") << 1
    if block[0] & 0x80:
        n ^= 0x87
    return (n & ((1 << 128) - 1)).to_bytes(16, "big")


def diversify(master: bytes, div_input: bytes) -> bytes:
    """NXP AN10922 AES-128 key diversification of ``master`` with ``div_input`` (1..31 bytes).

    M = 0x01 || div_input, padded (0x80 00 ...) to 32 bytes unless it is already 32; the
    last block is XORed with CMAC subkey K2 (K1 when M needed no padding); the key is the
    last block of AES-CBC over M. Vector (AN10922 section 2.2.1): master
    ``00112233445566778899AABBCCDDEEFF``, input ``04782E21801D80 3042F5 4E585020416275`` ->
    ``A8DD63A3B89D54B37CA802473FDA9175``.
    """
    if len(master) != 16:
        raise ValueError("an AES-128 master key is 16 bytes")
    if not 1 <= len(div_input) <= 31:
        raise ValueError("the diversification input is 1 to 31 bytes")
    m = b"\x01" + div_input
    if len(m) == 32:  # no padding: plain AES-CMAC
        mac = CMAC(algorithms.AES(master))
        mac.update(m)
        return mac.finalize()
    enc = Cipher(algorithms.AES(master), modes.ECB()).encryptor()  # noqa: S305 - subkey L
    k2 = _dbl(_dbl(enc.update(bytes(16)) + enc.finalize()))
    m += b"\x80" + bytes(31 - len(m))
    m = m[:16] + bytes(a ^ b for a, b in zip(m[16:], k2, strict=True))
    cbc = Cipher(algorithms.AES(master), modes.CBC(bytes(16))).encryptor()
    return (cbc.update(m) + cbc.finalize())[-16:]


# --------------------------------------------------------------------------- the key file


@dataclass(frozen=True)
class SunKeySet:
    """One generation of a shop's 424 keys: the shared meta-read key and the master key."""

    meta_read: bytes
    master: bytes

    def card_key(self, uid: bytes, key_no: int) -> bytes:
        """Key ``key_no`` (0..4) of the card ``uid``; key 1 is the shared K_SDMMetaRead."""
        if key_no not in KEY_NUMBERS:
            raise ValueError("NTAG 424 DNA keys are numbered 0..4")
        if len(uid) != sun.UID_LENGTH:
            raise ValueError("an NTAG 424 DNA UID is 7 bytes")
        if key_no == META_READ_KEY_NO:
            return self.meta_read
        return diversify(self.master, uid + bytes([key_no]) + SYSTEM_ID)

    def file_read(self, uid: bytes) -> bytes:
        """K_SDMFileRead of the card ``uid`` (its key 2)."""
        return self.card_key(uid, FILE_READ_KEY_NO)

    def card_keys(self, uid: bytes) -> dict[int, bytes]:
        """The five keys to write on the card ``uid``."""
        return {n: self.card_key(uid, n) for n in KEY_NUMBERS}

    def __repr__(self) -> str:  # never key material in a log or a traceback
        return "SunKeySet(...)"


@dataclass(frozen=True)
class SunKeyring:
    """The key sets a server verifies with (retired ones left out) and the current one."""

    current: int
    sets: dict[int, SunKeySet]

    def in_order(self) -> list[tuple[int, SunKeySet]]:
        """The current set first, then the others newest first."""
        ids = sorted(self.sets, key=lambda i: (i != self.current, -i))
        return [(i, self.sets[i]) for i in ids]


def new_set() -> dict:
    return {"meta_read": secrets.token_hex(16), "master": secrets.token_hex(16)}


def _new_file() -> dict:
    return {"current": 1, "sets": {"1": new_set()}, "retired": []}


def _key(value: str, what: str, path: str) -> bytes:
    key = bytes.fromhex(value)
    if len(key) != 16:
        raise ValueError(f"{path}: {what} must be 16 bytes (32 hex digits)")
    return key


def parse_keyring(data: dict, path: str = "SUN key file") -> SunKeyring:
    """Check and read the key file's JSON.

    Raises:
        ValueError: a key of the wrong length, or the current set missing or retired.
    """
    retired = {int(i) for i in data.get("retired", [])}
    sets = {int(i): SunKeySet(_key(s["meta_read"], f"set {i} meta_read", path),
                              _key(s["master"], f"set {i} master", path))
            for i, s in data["sets"].items() if int(i) not in retired}
    current = int(data["current"])
    if current not in sets:
        raise ValueError(f"{path}: the current SUN key set {current} is missing or retired")
    return SunKeyring(current=current, sets=sets)


def load_sun_keyring(path: str) -> SunKeyring:
    """Read (or create, mode 0600) the SUN key file at ``path``."""
    return parse_keyring(load_or_create_json(path, _new_file), path)


def verify_any(url: str, ring: SunKeyring, *, mac_input: sun.MacInput = "auto",
               params: sun.SunParams = sun.DEFAULT_PARAMS) -> tuple[int, sun.SunResult]:
    """Verify ``url`` with each key set in turn; ``(set id, result)`` of the one that fits.

    Raises:
        sun.InvalidSun: malformed or LRP at once; ``ForgedSun`` if no set verifies it.
    """
    forged: sun.ForgedSun | None = None
    for set_id, keys in ring.in_order():
        try:
            return set_id, sun.verify(url, keys.meta_read, keys.file_read,
                                      mac_input=mac_input, params=params)
        except sun.ForgedSun as exc:
            forged = exc
    raise forged or sun.ForgedSun("no SUN key set is configured")


# --------------------------------------------------------------------------- card layout

# NFC Forum URI record prefixes a shop's address can start with (the longest one is used)
URI_PREFIXES = {"http://www.": 0x01, "https://www.": 0x02, "http://": 0x03, "https://": 0x04}
PICC_HEX, ENC_HEX, MAC_HEX = 32, 32, 16


@dataclass(frozen=True)
class SdmLayout:
    """What a shop writes into a card's NDEF file (file 02) and its SDM file settings."""

    template: str  # the URL with zeros where the card mirrors its data
    ndef_file: bytes  # NLEN + NDEF message, as WriteData writes it from offset 0
    picc_offset: int
    mac_input_offset: int
    mac_offset: int
    enc_offset: int | None = None
    enc_length: int | None = None

    def file_settings(self) -> bytes:
        """ChangeFileSettings (0x5F) data for file 02, before secure messaging.

        FileOption 40 (SDM on, plain), access rights 00 E0 (read free; write, read-write and
        change with key 0), SDMOptions C1 (UID and counter mirrored, ASCII; D1 with encrypted
        file data), SDMAccessRights FF 12 (counter retrieval: none, meta read: key 1, file
        read: key 2), then the offsets, 3 bytes each, least significant byte first.
        """
        def off(n: int) -> bytes:
            return n.to_bytes(3, "little")

        options = 0xD1 if self.enc_offset is not None else 0xC1
        data = bytes([0x40, 0x00, 0xE0, options, 0xFF,
                      META_READ_KEY_NO << 4 | FILE_READ_KEY_NO])
        data += off(self.picc_offset) + off(self.mac_input_offset)
        if self.enc_offset is not None and self.enc_length is not None:
            data += off(self.enc_offset) + off(self.enc_length)
        return data + off(self.mac_offset)


def ndef_uri_file(url: str) -> tuple[bytes, int]:
    """``(NDEF file bytes, shift)``: the URL's character ``i`` (past its prefix) is at file
    offset ``shift + i`` (the prefix itself is one code byte)."""
    prefix = max((p for p in URI_PREFIXES if url.startswith(p)), key=len, default="")
    payload = bytes([URI_PREFIXES.get(prefix, 0)]) + url[len(prefix):].encode("ascii")
    if len(payload) < 256:  # short record: MB ME SR, TNF 1 (well-known), type "U"
        record = bytes([0xD1, 0x01, len(payload)]) + b"U" + payload
    else:
        record = bytes([0xC1, 0x01]) + len(payload).to_bytes(4, "big") + b"U" + payload
    start = len(record) - len(payload) + 1 - len(prefix)
    return len(record).to_bytes(2, "big") + record, 2 + start


def layout(base_url: str, params: sun.SunParams = sun.DEFAULT_PARAMS, *,
           file_data: bool = False) -> SdmLayout:
    """The card layout for ``{base_url}/c/sun?picc=..[&enc=..]&cmac=..`` (first names).

    With ``file_data`` the MAC input starts at the encrypted file data (``mac_input="auto"``
    on the server); without, it is empty (MAC input offset = MAC offset).
    """
    picc, mac = params.picc[0], params.cmac[0]
    url = f"{base_url.rstrip('/')}/c/sun?{picc}={'0' * PICC_HEX}"
    if file_data:
        url += f"&{params.enc[0]}={'0' * ENC_HEX}"
    url += f"&{mac}={'0' * MAC_HEX}"
    ndef_file, url_at = ndef_uri_file(url)
    query = sun.query_fields(url)
    at = {f.name: url_at + f.start for f in query}
    enc_at = at.get(params.enc[0]) if file_data else None
    return SdmLayout(template=url, ndef_file=ndef_file, picc_offset=at[picc],
                     mac_input_offset=enc_at if enc_at is not None else at[mac],
                     mac_offset=at[mac], enc_offset=enc_at,
                     enc_length=ENC_HEX if file_data else None)


# --------------------------------------------------------------------------- CLI


def _config() -> dict:
    from flask import current_app, has_app_context

    from server.config import load_config

    return dict(current_app.config) if has_app_context() else load_config()


def _params(config: dict) -> sun.SunParams:
    return sun.SunParams.from_config(config.get("SUN_PICC_PARAMS"),
                                     config.get("SUN_ENC_PARAMS"),
                                     config.get("SUN_CMAC_PARAMS"))


def _existing_file(config: dict) -> tuple[str, dict]:
    path = config["SUN_KEYS_FILE"]
    if not Path(path).exists():
        raise click.ClickException(f"no SUN key file at {path} (wrong environment? "
                                   "`init` creates one)")
    return path, json.loads(Path(path).read_text())


@click.group("sun", help="NTAG 424 DNA cards: SUN key file and card provisioning "
                         "(docs/CARDS-424.md).")
def sun_cli() -> None:
    pass


@sun_cli.command("init", help="Create the SUN key file if there is none (prints no key).")
def init_cmd() -> None:
    path = _config()["SUN_KEYS_FILE"]
    existed = Path(path).exists()
    ring = load_sun_keyring(path)
    click.echo(f"{path}: {'already there' if existed else 'created'}; "
               f"key sets {sorted(ring.sets)}, current {ring.current}")


@sun_cli.command("card-keys", help="Print the five keys to write on the card UID (14 hex "
                                   "digits). Key material: for the encoding station only.")
@click.argument("uid")
@click.option("--set", "set_id", type=int, default=None, help="key set (default: current)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object, for a script")
def card_keys_cmd(uid: str, set_id: int | None, as_json: bool) -> None:
    try:
        raw_uid = bytes.fromhex(uid)
    except ValueError:
        raise click.BadParameter("the UID is hexadecimal", param_hint="UID") from None
    if len(raw_uid) != sun.UID_LENGTH:
        raise click.BadParameter("an NTAG 424 DNA UID is 7 bytes", param_hint="UID")
    path, data = _existing_file(_config())
    ring = parse_keyring(data, path)
    set_id = ring.current if set_id is None else set_id
    if set_id not in ring.sets:
        raise click.ClickException(f"no key set {set_id} (or it is retired)")
    keys = ring.sets[set_id].card_keys(raw_uid)
    if as_json:
        click.echo(json.dumps({"uid": raw_uid.hex().upper(), "set": set_id,
                               "keys": {str(n): k.hex().upper() for n, k in keys.items()}}))
        return
    names = {0: "application master (ChangeKey, ChangeFileSettings)",
             1: "K_SDMMetaRead (shared by every card of the set)",
             2: "K_SDMFileRead (SUN MAC)", 3: "unused", 4: "unused"}
    click.echo(f"card {raw_uid.hex().upper()}, key set {set_id}")
    for n, key in keys.items():
        click.echo(f"  key {n}: {key.hex().upper()}  {names[n]}")


@sun_cli.command("layout", help="The NDEF file and SDM settings to write on every card.")
@click.option("--file-data", is_flag=True, help="mirror 16 bytes of encrypted file data too")
def layout_cmd(file_data: bool) -> None:
    config = _config()
    lay = layout(config["CARD_BASE_URL"], _params(config), file_data=file_data)
    click.echo(f"URL template:      {lay.template}")
    click.echo(f"NDEF file (02):    {lay.ndef_file.hex().upper()}")
    click.echo(f"PICCDataOffset:    {lay.picc_offset} (0x{lay.picc_offset:06X})")
    if lay.enc_offset is not None:
        click.echo(f"SDMENCOffset:      {lay.enc_offset} (0x{lay.enc_offset:06X})")
        click.echo(f"SDMENCLength:      {lay.enc_length} (0x{lay.enc_length:06X})")
    click.echo(f"SDMMACInputOffset: {lay.mac_input_offset} (0x{lay.mac_input_offset:06X})")
    click.echo(f"SDMMACOffset:      {lay.mac_offset} (0x{lay.mac_offset:06X})")
    click.echo(f"ChangeFileSettings 02 data: {lay.file_settings().hex().upper()}")


@sun_cli.command("rotate", help="Add a new key set and make it current (a leaked master key). "
                                "Cards already out keep verifying with their set.")
def rotate_cmd() -> None:
    path, data = _existing_file(_config())
    new_id = max(int(i) for i in data["sets"]) + 1
    data["sets"][str(new_id)] = new_set()
    data["current"] = new_id
    parse_keyring(data, path)
    write_json(path, data)
    click.echo(f"{path}: key set {new_id} added and current; back the file up")


@sun_cli.command("retire", help="Stop accepting the cards of a key set (not the current one).")
@click.argument("set_id", type=int)
def retire_cmd(set_id: int) -> None:
    path, data = _existing_file(_config())
    if str(set_id) not in data["sets"]:
        raise click.ClickException(f"no key set {set_id}")
    if set_id == int(data["current"]):
        raise click.ClickException("the current key set cannot be retired: rotate first")
    data["retired"] = sorted({*map(int, data.get("retired", [])), set_id})
    write_json(path, data)
    click.echo(f"{path}: key set {set_id} retired; its cards now answer sun-forged")


if __name__ == "__main__":  # python -m server.cards.sun_keys ...
    sys.exit(sun_cli())
