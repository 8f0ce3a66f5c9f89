"""
Egress policy, whole-request deadline and TLS, against real servers on 127.0.0.1.

The HTTPS tests use a certificate authority generated in the test with ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from urllib3.exceptions import InsecureRequestWarning

from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.egress import EgressPolicy
from airflow_webhook_provider.core.retry import RetrySchedule
from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook
from airflow_webhook_provider.receiver import RecordingReceiver, Reply
from tests.conftest import SECRET, flow_webhook_connection, submit

EVENT = JobEvent(flow_id="hardening", job_id="run_1", job_status="success")
FAST = RetrySchedule(attempts=3, backoff_seconds=0.01, budget_seconds=10)


def deliver(conn_id: str, *, schedule: RetrySchedule = FAST):
    return FlowWebhookHook(conn_id, retry=schedule).deliver(FlowWebhook(name="w", conn_id=conn_id), EVENT)


class TestEgressPolicy:
    def test_forbidden_network_is_blocked_on_the_resolved_address_and_not_retried(
        self, receiver, connect, monkeypatch
    ):
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__FORBIDDEN_NETWORKS", "127.0.0.0/8, ::1/128")
        conn_id = connect(path="/hook")
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            flow_webhook_connection(f"http://localhost:{receiver.port}/hook"),  # a name, not an address
        )
        result = deliver(conn_id)
        assert not result.delivered and not result.retryable
        assert len(result.attempts) == 1
        assert "localhost resolves to" in result.error and "forbidden network" in result.error
        assert receiver.wait_for(1, timeout=0.5) == []

    def test_every_attempt_is_checked_so_rebinding_is_caught(self, receiver, connect, monkeypatch):
        """The first lookup gives the real receiver (which fails), the second a metadata address."""
        conn_id = connect()
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            flow_webhook_connection(f"http://rebind.test:{receiver.port}/hook"),
        )
        answers = iter(["127.0.0.1", "169.254.169.254"])
        real_getaddrinfo = socket.getaddrinfo

        def rebinding_dns(host, port, *args, **kwargs):
            if host == "rebind.test":
                return real_getaddrinfo(next(answers), port, *args, **kwargs)
            return real_getaddrinfo(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
        # The receiver closes the connection, so the second attempt must open (and check) a
        # new one; a kept-alive connection stays with the address that was already checked.
        receiver.script(Reply(503, headers={"Connection": "close"}))
        result = deliver(conn_id)
        assert [a.status_code for a in result.attempts] == [503, None]
        assert "169.254.169.254, inside forbidden network 169.254.0.0/16" in result.attempts[1].error
        assert len(receiver.requests) == 1

    def test_allowed_url_regexes(self, receiver, connect, monkeypatch):
        conn_id = connect(path="/hooks/ok")
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__ALLOWED_URL_REGEXES", r"http://127\.0\.0\.1:\d+/hooks/ok")
        assert deliver(conn_id).delivered
        bad = connect("elsewhere", path="/other")
        result = deliver(bad)
        assert not result.delivered and not result.retryable
        assert "allowed_url_regexes" in result.error
        assert [r.target for r in receiver.requests] == ["/hooks/ok"]

    def test_blocked_delivery_is_recorded_failed_with_the_reason_and_not_rescheduled(
        self, receiver, connect, monkeypatch
    ):
        from airflow_webhook_provider.ledger import open_ledger

        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__FORBIDDEN_NETWORKS", "127.0.0.0/8")
        conn_id = connect()
        (result,) = submit(
            [(FlowWebhook(name="blocked", conn_id=conn_id), EVENT)], attempts=3, backoff=0.01, budget=10
        )
        row = open_ledger().get(result.delivery_id)
        assert (row.state, row.next_attempt_at, row.attempts) == ("failed", None, 1)
        assert row.last_error.startswith("EgressBlocked: 127.0.0.1 resolves to 127.0.0.1")

    @pytest.mark.parametrize(
        "address",
        ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1", "fd00:ec2::254", "100.100.100.200"],
    )
    def test_default_policy_blocks_link_local_and_metadata(self, address):
        policy = EgressPolicy.parse()
        with pytest.raises(Exception, match="forbidden network"):
            policy.check_address(ipaddress.ip_address(address), host="h")
        policy.check_address(ipaddress.ip_address("93.184.216.34"), host="h")

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            pytest.param(
                {"forbidden_networks": "10.0.0.0/33"}, "forbidden_networks: '10.0.0.0/33'", id="cidr"
            ),
            pytest.param({"allowed_url_regexes": "https://(unclosed"}, "allowed_url_regexes", id="regex"),
        ],
    )
    def test_bad_policy_settings_name_the_option(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            EgressPolicy.parse(**kwargs)


def drip_server(stop: threading.Event) -> tuple[socket.socket, int]:
    """A receiver that answers one byte every 0.2 s, forever: per-read timeouts never fire."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 10_000:
                    if stop.is_set():
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.2)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_slow_drip_receiver_cannot_hold_a_delivery_past_its_deadline(monkeypatch):
    stop = threading.Event()
    server, port = drip_server(stop)
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DRIP", flow_webhook_connection(f"http://127.0.0.1:{port}/", timeout=1)
        )
        result = deliver("drip", schedule=RetrySchedule(attempts=1))
    finally:
        stop.set()
        server.close()
    assert not result.delivered
    assert result.attempts[0].error == "DeadlineExceeded: no complete answer within 1.2 s"
    assert result.duration_seconds < 5  # without the deadline it would drip for 2000 s


class CertificateAuthority:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flow-webhook test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = self.write("ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    def issue(self, name: str, *, ips=(), dns=(), client: bool = False) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        alt_names = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(d) for d in dns]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = self.write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        key_path = self.write(
            f"{name}.key",
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        return cert_path, key_path


@pytest.fixture
def ca(tmp_path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


def https_receiver(ca: CertificateAuthority, *, ips=("127.0.0.1",), dns=(), require_client_cert=False):
    cert, key = ca.issue("server", ips=ips, dns=dns)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(ca.path)
    return RecordingReceiver(secret=SECRET, tls=context)


class TestTLS:
    def test_trusted_through_the_connection_ca_bundle(self, ca, monkeypatch):
        with https_receiver(ca) as receiver:
            monkeypatch.setenv(
                "AIRFLOW_CONN_TLS", flow_webhook_connection(receiver.url("/h"), ca_bundle=ca.path)
            )
            result = deliver("tls")
            assert result.delivered
            (request,) = receiver.wait_for(1)
            assert request.signature_valid and request.url.startswith("https://")

    def test_untrusted_certificate_is_refused_by_default(self, ca, monkeypatch):
        with https_receiver(ca) as receiver:
            monkeypatch.setenv("AIRFLOW_CONN_TLS", flow_webhook_connection(receiver.url("/h")))
            result = deliver("tls", schedule=RetrySchedule(attempts=1))
            assert not result.delivered
            assert "SSLError" in result.error
            assert receiver.requests == []

    def test_validation_can_be_turned_off(self, ca, monkeypatch):
        with https_receiver(ca) as receiver:
            monkeypatch.setenv(
                "AIRFLOW_CONN_TLS", flow_webhook_connection(receiver.url("/h"), validate_ssl="false")
            )
            with pytest.warns(InsecureRequestWarning):  # an explicit, insecure choice: say so
                assert deliver("tls").delivered

    def test_wrong_host_is_refused(self, ca, monkeypatch):
        with https_receiver(ca, ips=(), dns=("hooks.example.test",)) as receiver:
            monkeypatch.setenv(
                "AIRFLOW_CONN_TLS", flow_webhook_connection(receiver.url("/h"), ca_bundle=ca.path)
            )
            result = deliver("tls", schedule=RetrySchedule(attempts=1))
            assert not result.delivered
            assert "SSLError" in result.error

    def test_client_certificate_required(self, ca, monkeypatch):
        client_cert, client_key = ca.issue("client", client=True)
        with https_receiver(ca, require_client_cert=True) as receiver:
            monkeypatch.setenv(
                "AIRFLOW_CONN_TLS", flow_webhook_connection(receiver.url("/h"), ca_bundle=ca.path)
            )
            assert not deliver("tls", schedule=RetrySchedule(attempts=1)).delivered
            monkeypatch.setenv(
                "AIRFLOW_CONN_MTLS",
                flow_webhook_connection(
                    receiver.url("/h"), ca_bundle=ca.path, client_cert=client_cert, client_key=client_key
                ),
            )
            assert deliver("mtls").delivered
            assert len(receiver.wait_for(1)) == 1


def test_a_huge_response_is_not_drained(monkeypatch):
    """The receiver offers 50 MiB; the sender reads 64 KiB, keeps 4 KiB, and hangs up."""
    offered = 50 * 1024 * 1024
    sent = [0]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % offered)
            chunk = b"z" * 65536
            try:
                while sent[0] < offered:
                    conn.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass  # the sender closed the connection

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_HUGE", flow_webhook_connection(f"http://127.0.0.1:{server.getsockname()[1]}/")
        )
        result = deliver("huge", schedule=RetrySchedule(attempts=1))
        thread.join(timeout=20)
    finally:
        server.close()
    assert result.delivered
    assert len(result.attempts[0].response_excerpt) == 4096
    assert not thread.is_alive()
    assert sent[0] < offered / 4, f"the receiver pushed {sent[0]} bytes: the response was drained"


def test_transport_errors_never_echo_the_url_query(monkeypatch, caplog):
    """urllib3's text repeats the request path and query ("with url: /hook?token=..."); ours must not."""
    import logging

    from airflow_webhook_provider.ledger import open_ledger

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here
    token = "q-token-73be0a"
    monkeypatch.setenv(
        "AIRFLOW_CONN_LEAKY", flow_webhook_connection(f"http://127.0.0.1:{port}/hook?token={token}&team=data")
    )
    with caplog.at_level(logging.DEBUG):
        (result,) = submit(
            [(FlowWebhook(name="leaky", conn_id="leaky"), EVENT)], attempts=3, backoff=0.01, budget=10
        )
    row = open_ledger().get(result.delivery_id)
    assert "Connection refused" in result.error
    assert token not in result.error and token not in row.last_error and token not in row.url
    assert token not in caplog.text
