"""HTTP to the central service for device processes: one keep-alive session, clear errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import requests

log = logging.getLogger(__name__)


class ServerUnavailable(Exception):  # noqa: N818 - reads as the state it reports
    """The service could not be reached or did not answer in time."""


@dataclass
class ServerProblem(Exception):  # noqa: N818
    """The service answered with a problem document (RFC 9457)."""

    status: int
    type: str
    title: str
    detail: str | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.type.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.detail or self.title


class ServiceClient:
    """Calls ``/api/v1`` with the device key; never logs the key or the bodies."""

    def __init__(self, base_url: str, device_key: str, timeout: float = 5.0,
                 ca_file: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if ca_file:
            # the shop's own CA (LOYALTY_SERVER_CA): the service's certificate must chain to
            # it, and to nothing else the system trusts (docs/DEPLOY.md)
            self.session.verify = ca_file
            self.session.trust_env = False  # no REQUESTS_CA_BUNDLE or proxy overriding it
        self.session.headers["Authorization"] = f"Bearer {device_key}"
        self.session.headers["User-Agent"] = "loyalty-device/1"

    def post(self, path: str, body: dict, headers: dict | None = None) -> dict:
        """POST ``body`` as JSON and return the JSON answer.

        Raises:
            ServerUnavailable: no connection, timeout, a 5xx answer, or 429 ``rate-limited``
                (the device's own request rate, not the event: send it again later).
            ServerProblem: any other 4xx answer.
        """
        return self.send("POST", path, body, headers)

    def send(self, method: str, path: str, body: dict, headers: dict | None = None) -> dict:
        """Send ``body`` as JSON with ``method`` (POST, PUT) and return the JSON answer.

        Raises:
            ServerUnavailable: no connection, timeout, or a 5xx answer.
            ServerProblem: any 4xx answer.
        """
        url = f"{self.base_url}/api/v1{path}"
        try:
            response = self.session.request(method, url, json=body, headers=headers,
                                            timeout=(min(2.0, self.timeout), self.timeout))
        except requests.RequestException as exc:
            log.warning("service unreachable: %s", exc.__class__.__name__)
            raise ServerUnavailable(f"the loyalty service at {self.base_url} does not answer") \
                from None
        if response.status_code >= 500:
            raise ServerUnavailable(f"the loyalty service answered {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code == 429 and str(data.get("type", "")).endswith("/rate-limited"):
            # the device itself is over its request rate: not a verdict on the event, which
            # goes again later (a replayed offline queue is paced this way)
            raise ServerUnavailable("the loyalty service asks this device to slow down "
                                    f"(retry after {response.headers.get('Retry-After')} s)")
        if response.status_code >= 400:
            raise ServerProblem(status=response.status_code,
                                type=data.get("type", f"/http/{response.status_code}"),
                                title=data.get("title", response.reason or "error"),
                                detail=data.get("detail"), body=data)
        return data

    def close(self) -> None:
        self.session.close()
