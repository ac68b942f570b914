"""Who may call the kiosk's and the till agent's own HTTP endpoints (docs/ROLES.md).

Both listen on 127.0.0.1 only (checked for the units in tests/test_systemd_units.py): the
callers are the kiosk's Chromium and the till's point-of-sale software on the same machine.
On the kiosk, the customer's touch screen walks the flow (CSRF tokens:
tests/test_security_csrf.py); staff pages need staff mode, opened by a staff card or a name
and PIN checked by the service. On the agent, ``/simulate`` exists only with a ``sim:``
reader, and ``/events`` and ``/last`` are readable from another origin only by the back
office's, in desk mode (tests/test_desk_reader.py). Every rule must be listed here and in
docs/ROLES.md.
"""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "ROLES.md"
SCREEN, STAFF, LOCAL, SIM = "screen", "staff mode", "local", "sim reader"

KIOSK = {
    "GET /": SCREEN, "POST /alive": SCREEN, "POST /begin": SCREEN, "GET /card": SCREEN,
    "POST /card": SCREEN, "GET /consents": SCREEN, "POST /consents": SCREEN,
    "GET /details": SCREEN, "POST /details": SCREEN, "GET /healthz": LOCAL,
    "GET /issue/": SCREEN, "GET /issue/done": SCREEN, "POST /issue/give-up": SCREEN,
    "POST /issue/retry": SCREEN, "GET /issue/status": SCREEN, "GET /lang/<code>": SCREEN,
    "GET /language": SCREEN, "POST /language": SCREEN, "POST /reset": SCREEN,
    "GET /survey/<int:n>": SCREEN, "POST /survey/<int:n>": SCREEN,
    "GET /staff/": SCREEN, "POST /staff/login": SCREEN, "GET /staff/read": SCREEN,
    "GET /staff/customer": STAFF, "GET /staff/find": STAFF, "POST /staff/find": STAFF,
    "GET /staff/results": STAFF, "POST /staff/results": STAFF, "POST /staff/reissue": STAFF,
}
AGENT = {
    "GET /": LOCAL, "GET /display": LOCAL, "GET /events": LOCAL, "GET /last": LOCAL,
    "GET /metrics": LOCAL, "POST /purchases": LOCAL, "PUT /anonymous-sales": LOCAL,
    "GET /queue": LOCAL,
    "GET /status": LOCAL, "POST /simulate": SIM,
}
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def rules(app) -> set[str]:
    return {f"{method} {rule.rule}" for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}
            if not rule.endpoint.endswith("static")}


def test_every_kiosk_and_agent_endpoint_is_listed(make_kiosk, make_agent):
    assert rules(make_kiosk("file:/dev/null")) == set(KIOSK)
    assert rules(make_agent("sim:")) == set(AGENT)


def test_the_roles_doc_lists_them_too():
    doc = DOC.read_text()
    for key, who in {**KIOSK, **AGENT}.items():
        method, rule = key.split(" ", 1)
        assert re.search(rf"\| `{re.escape(key)}` \| {re.escape(who)} \|", doc), key


def test_kiosk_staff_pages_need_staff_mode(make_kiosk):
    client = make_kiosk("file:/dev/null", HEARTBEAT_INTERVAL=0).test_client()
    token = CSRF.search(client.get("/staff/").get_data(as_text=True))[1]

    for key, who in KIOSK.items():
        if who != STAFF:
            continue
        method, path = key.split(" ", 1)
        r = client.open(path, method=method, data={"csrf_token": token, "query": "C-AAAA",
                                                   "customer_id": "C-AAAA-AAAA",
                                                   "kind": "qr"})
        assert r.status_code in (302, 303), (key, r.status_code)
        assert r.headers["Location"].rstrip("/").endswith("/staff"), (key, r.headers)


def test_the_agent_simulates_taps_only_with_a_sim_reader(make_agent):
    client = make_agent("hid:/dev/null/no-such-scanner").test_client()
    assert client.post("/simulate", json={"qr": "x"}).status_code == 404
