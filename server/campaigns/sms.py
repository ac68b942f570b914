"""Sending an SMS: an adapter chosen by ``SMS_URL``.

- ``http://…`` or ``https://…``: a generic HTTP gateway; ``POST`` JSON ``{"to", "text"}``
  with ``Authorization: Bearer <SMS_TOKEN>``; a 2xx answer is sent (its JSON ``id``, if
  any, is the provider's id), a 5xx or no answer is worth trying again, another 4xx is not.
- ``file:/dir``: one JSON file per message in that folder (the ``make run`` default).

The number and the text are never logged.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class SmsError(Exception):
    """The message was not handed over; ``temporary`` says whether a later run may retry."""

    def __init__(self, reason: str, temporary: bool) -> None:
        super().__init__(reason)
        self.temporary = temporary


class FileSink:
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def send(self, to: str, text: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        message_id = uuid.uuid4().hex
        path = self.folder / f"{message_id}.json"
        path.write_text(json.dumps({"to": to, "text": text}, ensure_ascii=False))
        path.chmod(0o600)
        return message_id


class HttpGateway:
    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url, token, timeout

    def send(self, to: str, text: str) -> str | None:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # the scheme is http(s): adapter() chose this class for no other
        request = urllib.request.Request(  # noqa: S310
            self.url, method="POST", headers=headers,
            data=json.dumps({"to": to, "text": text}).encode())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as exc:
            log.warning("SMS gateway answered %s", exc.code)
            raise SmsError(f"gateway answered {exc.code}", temporary=exc.code >= 500
                           or exc.code == 429) from None
        except OSError as exc:
            log.warning("SMS gateway unreachable: %s", exc.__class__.__name__)
            raise SmsError(f"gateway unreachable ({exc.__class__.__name__})",
                           temporary=True) from None
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            return None
        found = answer.get("id") if isinstance(answer, dict) else None
        return str(found)[:100] if found is not None else None


def adapter(url: str, token: str | None = None) -> FileSink | HttpGateway:
    """The adapter ``url`` names."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return FileSink(url[len("file:"):].removeprefix("//") or ".")
    if scheme in {"http", "https"}:
        return HttpGateway(url, token)
    raise ValueError(f"SMS_URL scheme {scheme!r} is not http, https or file")
