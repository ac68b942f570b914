"""Kiosk and till agent talk HTTPS to the service with the shop's CA pinned (SERVER_CA).

A real TLS server (werkzeug with an ssl context) with a certificate made here by a throwaway
CA: the device client signed by that CA gets through; one told to trust another CA refuses
the connection (``ServerUnavailable``), and so does the system's trust store, which has never
heard of the shop's CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from werkzeug.serving import make_server

from device_drivers.forwarder import ServerUnavailable, ServiceClient


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(folder, cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    path = folder / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(folder, ca_key, ca_cert):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("loyalty.shop.test"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def https_service(tmp_path):
    """An HTTPS 'service' answering the heartbeat; yields (url, shop CA file, other CA file)."""
    ca_key, ca_cert, ca_path = make_ca(tmp_path, "shop-ca")
    _, _, other_path = make_ca(tmp_path, "other-ca")
    cert_path, key_path = make_server_cert(tmp_path, ca_key, ca_cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    app = Flask("https-service")

    @app.post("/api/v1/devices/heartbeat")
    def heartbeat():
        return {"ok": True}

    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", str(ca_path), str(other_path)
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_the_device_client_trusts_the_pinned_ca_and_nothing_else(https_service):
    url, shop_ca, other_ca = https_service

    assert ServiceClient(url, "k", 5, shop_ca).post("/devices/heartbeat", {}) == {"ok": True}
    with pytest.raises(ServerUnavailable):
        ServiceClient(url, "k", 5, other_ca).post("/devices/heartbeat", {})
    with pytest.raises(ServerUnavailable):  # the system's store does not know the shop's CA
        ServiceClient(url, "k", 5).post("/devices/heartbeat", {})


def test_kiosk_and_agent_read_the_ca_setting(make_kiosk, make_agent, https_service):
    _, shop_ca, _ = https_service
    kiosk = make_kiosk("file:/dev/null", SERVER_CA=shop_ca)
    agent = make_agent("sim:", SERVER_CA=shop_ca)

    assert kiosk.extensions["kiosk.client"].session.verify == shop_ca
    assert agent.extensions["agent"].client.session.verify == shop_ca
    assert kiosk.extensions["kiosk.heartbeat"].client_args[-1] == shop_ca

