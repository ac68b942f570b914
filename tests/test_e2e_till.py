"""A card at the till, end to end: reader -> agent -> service -> record at GET /last."""

import uuid

import pytest
import requests

from device_drivers.ndefmsg import uri_message
from tests.support.fixtures_devices import last_after, serve, wait_until


def enrol_with_card(live_server, first_name="Élodie", last_name="Durand") -> tuple[str, dict]:
    """Enrol a customer and issue a QR card through the service's HTTP API (as a kiosk)."""
    kiosk = {"Authorization": f"Bearer {live_server.creds['kiosk_key']}"}
    r = requests.post(f"{live_server.url}/api/v1/enrolments", headers=kiosk, timeout=5, json={
        "event_id": str(uuid.uuid4()), "first_name": first_name, "last_name": last_name,
        "email": f"{uuid.uuid4().hex[:8]}@example.fr", "language": "fr",
        "consents": {"terms": True}, "consent_version": "2026-11"})
    assert r.status_code == 201, r.text
    customer_id = r.json()["customer_id"]
    r = requests.post(f"{live_server.url}/api/v1/customers/{customer_id}/cards", headers=kiosk,
                      json={"event_id": str(uuid.uuid4()), "kind": "qr"}, timeout=5)
    assert r.status_code == 201, r.text
    return customer_id, r.json()


@pytest.mark.hardware
def test_pcsc_card_tap_shows_the_customer(live_server, pcscd, vcard, make_agent):
    customer_id, card = enrol_with_card(live_server, "Jūratė", "Kazlauskienė")
    agent = make_agent(f"pcsc:{pcscd.reader0}")
    client = agent.test_client()
    vcard(uid=bytes.fromhex("04A1B2C3D4E5F6"), ndef=uri_message(card["url"]))

    result = last_after(client, 0, timeout=10)
    assert result["ok"] is True, result
    record = result["record"]
    assert record["customer_id"] == customer_id
    assert record["display_name"] == "Jūratė K."
    assert record["card"] == {"card_id": card["card_id"], "kind": "qr", "status": "active",
                              "generation": 0}
    assert record["recent_purchases"] == [] and record["open_tickets"] == []
    assert result["reader"] == pcscd.reader0


@pytest.mark.hardware
def test_garbage_card_is_reported_and_the_reader_goes_on(live_server, pcscd, vcard, make_agent):
    customer_id, card = enrol_with_card(live_server)
    agent = make_agent(f"pcsc:{pcscd.reader0}")
    client = agent.test_client()
    # a tag whose capability container is cut short: garbage, not a card of ours
    vcard(uid=bytes.fromhex("04A1B2C3D4E5F7"), ndef=uri_message(card["url"]),
          cc=bytes.fromhex("000F20003B0034"))
    bad = last_after(client, 0, timeout=10)
    assert bad["ok"] is False
    assert bad["error"]["type"] == "reader-error"
    assert "capability container" in bad["error"]["detail"]

    vcard(uid=bytes.fromhex("04A1B2C3D4E5F8"), ndef=uri_message(card["url"]))
    good = last_after(client, bad["seq"], timeout=10)
    assert good["ok"] is True and good["record"]["customer_id"] == customer_id
    assert agent.test_client().get("/status").json["readers"][0]["status"] == "ready"


def test_replaced_card_is_refused_at_the_till_with_the_reason(live_server, make_agent):
    customer_id, card = enrol_with_card(live_server)
    # the desk replaces the lost card (admin confirms on the kiosk)
    import base64

    staff = base64.b64encode(f"admin:{live_server.creds['admin_password']}".encode()).decode()
    r = requests.post(f"{live_server.url}/api/v1/customers/{customer_id}/cards", timeout=5,
                      headers={"Authorization": f"Bearer {live_server.creds['kiosk_key']}",
                               "X-Staff-Authorization": f"Basic {staff}"},
                      json={"event_id": str(uuid.uuid4()), "kind": "qr", "replace": True,
                            "reason": "lost"})
    assert r.status_code == 201, r.text
    new_card = r.json()

    agent = make_agent("sim:")
    client = agent.test_client()
    assert client.post("/simulate", json={"url": card["url"]}).status_code == 202
    old = last_after(client, 0)
    assert old["ok"] is False
    assert old["error"]["type"] == "card-revoked" and old["error"]["status"] == 410
    assert "replaced" in old["error"]["detail"] and "lost" in old["error"]["detail"]

    assert client.post("/simulate", json={"qr": new_card["qr_text"]}).status_code == 202
    new = last_after(client, old["seq"])
    assert new["ok"] is True and new["record"]["customer_id"] == customer_id
    assert new["record"]["card"]["generation"] == 1


def test_forged_card_is_refused(live_server, make_agent):
    _, card = enrol_with_card(live_server)
    token = card["token"]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    client = make_agent("sim:").test_client()
    client.post("/simulate", json={"url": card["url"].replace(token, forged)})
    result = last_after(client, 0)
    assert result["ok"] is False
    assert result["error"]["type"] == "card-token-forged"


def test_service_down_is_said_plainly(make_agent):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    client = make_agent("sim:", SERVER_URL=dead, REQUEST_TIMEOUT=2.0).test_client()
    client.post("/simulate", json={"url": "https://shop.example/c/CGHTUXBOSHIEW5YA6OROMWBGNZUUWXZF"})
    result = last_after(client, 0)
    assert result["ok"] is False and result["error"]["type"] == "server-unreachable"


def test_unknown_reader_uri_is_reported_not_fatal(make_agent):
    client = make_agent("sim:, nosuch:thing").test_client()
    readers = {r["uri"]: r for r in client.get("/status").json["readers"]}
    assert readers["nosuch:thing"]["status"] == "failed"
    assert "unknown reader URI" in readers["nosuch:thing"]["error"]
    wait_until(lambda: client.get("/status").json["readers"][0]["status"] == "ready",
               what="the sim reader to be ready")


def test_till_page_updates_itself_over_server_sent_events(live_server, make_agent):
    customer_id, card = enrol_with_card(live_server, "Ona", "Petraitytė")
    agent = make_agent("sim:")
    with serve(agent) as url:
        stream = requests.get(f"{url}/events", stream=True, timeout=10)
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines).startswith("retry:")
        requests.post(f"{url}/simulate", json={"url": card["url"]}, timeout=5)
        event = {}
        for line in lines:
            if not line:
                if "data" in event:
                    break
                continue
            key, _, value = line.partition(": ")
            event[key] = value
        stream.close()
        assert event["event"] == "tap"
        import json

        data = json.loads(event["data"])
        assert data["record"]["customer_id"] == customer_id
        assert data["record"]["display_name"] == "Ona P."
        assert requests.get(f"{url}/last", timeout=5).json()["seq"] == data["seq"]
