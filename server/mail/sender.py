"""Send one message. ``MAIL_URL`` chooses how: ``smtp://host:port`` (STARTTLS when the server
offers it), ``smtps://host:port`` (TLS from the start), either with ``user:password@``, or
``file:/dir`` to write each message as an ``.eml`` file (the embedded default, so ``make run``
sends nothing anywhere). The password is never logged.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)


class MailError(Exception):
    """The message could not be handed over; it was not sent."""


def build(sender: str, to: str, subject: str, body: str, language: str | None = None
          ) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg.set_content(body)
    if language:  # after set_content, which replaces every Content-* header
        msg["Content-Language"] = language
    return msg


def send(url: str, msg: EmailMessage, timeout: float = 10.0) -> None:
    """Hand ``msg`` to the transport named by ``url``.

    Raises:
        MailError: the server refused it or could not be reached.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        folder = Path(parts.path or url[len("file:"):])
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{uuid.uuid4().hex}.eml"
        path.write_bytes(bytes(msg))
        path.chmod(0o600)
        return
    if parts.scheme not in {"smtp", "smtps"}:
        raise MailError(f"MAIL_URL scheme {parts.scheme!r} is not smtp, smtps or file")
    host, port = parts.hostname or "localhost", parts.port
    try:
        if parts.scheme == "smtps":
            client = smtplib.SMTP_SSL(host, port or 465, timeout=timeout,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(host, port or 25, timeout=timeout)
        with client:
            if parts.scheme == "smtp" and client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        # the recipient is personal data: the log names the failure only
        log.warning("mail not sent: %s", exc.__class__.__name__)
        raise MailError(exc.__class__.__name__) from None
