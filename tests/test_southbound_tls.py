"""Southbound TLS over real gRPC sockets on 127.0.0.1, with throw-away CAs made by `cryptography`.

A real grpc server serves the standard health service and a NodeExporter
servicer answering GetInfo. Mutual TLS admits only clients with a certificate
from the trusted CA; one-way TLS admits any client that trusts the server.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2_grpc

from srv6pm.southbound import ClientTls, ExporterClient, ServerTls, SouthboundError, TlsError, pb, rpc, server_port

# ---------------------------------------------------------------- throw-away PKI


@dataclass
class Pem:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key) -> Pem:
    pem = Pem(directory / f"{stem}.crt", directory / f"{stem}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pem


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (builder.not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


def make_ca(directory: Path, stem: str) -> tuple[Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(_name(stem))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True))
    cert = _validity(builder).sign(key, hashes.SHA256())
    return _write(directory, stem, cert, key), cert, key


def make_leaf(directory: Path, stem: str, ca, *, server: bool, names: list[x509.GeneralName]) -> Pem:
    _, ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _write(directory, stem, _validity(builder).sign(ca_key, hashes.SHA256()), key)


@dataclass
class Pki:
    ca: Path            # the CA that signs the server and the good client
    other_ca: Path      # an unrelated CA
    server: Pem         # SAN 127.0.0.1, localhost
    named_server: Pem   # SAN r1.srv6pm.test only
    client: Pem         # from ca
    stranger: Pem       # client certificate from other_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    other = make_ca(d, "other-ca")
    local = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    return Pki(
        ca=ca[0].cert, other_ca=other[0].cert,
        server=make_leaf(d, "server", ca, server=True, names=local),
        named_server=make_leaf(d, "named-server", ca, server=True, names=[x509.DNSName("r1.srv6pm.test")]),
        client=make_leaf(d, "collector", ca, server=False, names=[x509.DNSName("collector")]),
        stranger=make_leaf(d, "stranger", other, server=False, names=[x509.DNSName("collector")]),
    )


# ---------------------------------------------------------------- a real server


class InfoOnly(rpc.NodeExporterServicer):
    """Answers GetInfo; every other RPC stays UNIMPLEMENTED (the generated default)."""

    def GetInfo(self, request, context):
        return pb.NodeInfo(node="r1", boot_id="b-1", period_s=2.0, version="test")


def start_server(tls: ServerTls | None) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    rpc.add_NodeExporterServicer_to_server(InfoOnly(), server)
    port = server_port(server, "127.0.0.1:0", tls)
    assert port > 0
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def mutual(pki):
    server, address = start_server(ServerTls(pki.server.cert, pki.server.key, client_ca_file=pki.ca))
    yield address
    server.stop(None)


@pytest.fixture
def one_way(pki):
    server, address = start_server(ServerTls(pki.server.cert, pki.server.key))
    yield address
    server.stop(None)


def refused(address: str, tls: ClientTls | None) -> SouthboundError:
    with ExporterClient(address, tls, timeout=5) as client, pytest.raises(SouthboundError) as info:
        client.get_info()
    return info.value


# ---------------------------------------------------------------- mutual TLS


def test_mutual_tls_admits_a_client_with_a_certificate_from_the_ca(pki, mutual):
    tls = ClientTls(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key)
    with ExporterClient(mutual, tls) as client:
        info = client.get_info()
        assert (info.node, info.boot_id, info.period_s) == ("r1", "b-1", 2.0)
        assert client.health() == "SERVING"
        with pytest.raises(SouthboundError) as info:
            client.get_state()  # reached the server, which does not implement it
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED and not info.value.unreachable


def test_mutual_tls_refuses_a_client_without_a_certificate(pki, mutual):
    error = refused(mutual, ClientTls(ca_file=pki.ca))
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.unreachable


def test_mutual_tls_refuses_a_certificate_from_another_ca(pki, mutual):
    error = refused(mutual, ClientTls(ca_file=pki.ca, cert_file=pki.stranger.cert, key_file=pki.stranger.key))
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.unreachable


def test_mutual_tls_refuses_a_plaintext_client(mutual):
    error = refused(mutual, None)
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.unreachable


def test_client_refuses_a_server_it_does_not_trust(pki, mutual):
    error = refused(mutual, ClientTls(ca_file=pki.other_ca, cert_file=pki.client.cert, key_file=pki.client.key))
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.unreachable


# ---------------------------------------------------------------- one-way TLS, names, plaintext


def test_one_way_tls_needs_no_client_certificate(pki, one_way):
    with ExporterClient(one_way, ClientTls(ca_file=pki.ca)) as client:
        assert client.get_info().node == "r1"
    assert refused(one_way, None).unreachable  # still TLS: plaintext is refused


def test_server_name_override(pki):
    server, address = start_server(ServerTls(pki.named_server.cert, pki.named_server.key))
    try:
        # the certificate names r1.srv6pm.test, not 127.0.0.1
        assert refused(address, ClientTls(ca_file=pki.ca)).unreachable
        with ExporterClient(address, ClientTls(ca_file=pki.ca, server_name="r1.srv6pm.test")) as client:
            assert client.get_info().node == "r1"
    finally:
        server.stop(None)


def test_plaintext_only_when_asked():
    server, address = start_server(None)
    try:
        with ExporterClient(address) as client:
            assert client.get_info().node == "r1"
    finally:
        server.stop(None)


# ---------------------------------------------------------------- bad settings


def test_missing_file_is_named(pki, tmp_path):
    missing = tmp_path / "nope.crt"
    with pytest.raises(TlsError, match=r"^cert_file '.*nope\.crt': cannot read"):
        ServerTls(missing, pki.server.key).credentials()
    with pytest.raises(TlsError, match=r"^client_ca_file '.*nope\.crt': cannot read"):
        ServerTls(pki.server.cert, pki.server.key, client_ca_file=missing).credentials()
    with pytest.raises(TlsError, match=r"^ca_file '.*nope\.crt': cannot read"):
        ClientTls(ca_file=missing).credentials()


def test_not_pem_is_named(pki, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(TlsError, match=r"^key_file '.*junk\.pem': not a PEM file with a PRIVATE KEY"):
        ServerTls(pki.server.cert, junk).credentials()
    # a key where a certificate belongs
    with pytest.raises(TlsError, match=r"^cert_file '.*server\.key': not a PEM file with a CERTIFICATE"):
        ClientTls(ca_file=pki.ca, cert_file=pki.server.key, key_file=pki.server.key).credentials()


def test_directory_is_not_a_file(pki, tmp_path):
    with pytest.raises(TlsError, match=r"^ca_file .*: cannot read"):
        ClientTls(ca_file=tmp_path).credentials()


def test_certificate_and_key_go_together(pki):
    with pytest.raises(TlsError, match="cert_file and key_file"):
        ClientTls(ca_file=pki.ca, cert_file=pki.client.cert)


def test_a_key_that_is_not_the_certificate_s_is_refused(pki):
    """gRPC takes any PEM pair and then fails every handshake: the pair is checked when the files are read."""
    with pytest.raises(TlsError, match=r"^cert_file '.*server\.crt' and key_file '.*collector\.key': the key is "
                                       r"not the certificate's$"):
        ServerTls(pki.server.cert, pki.client.key).credentials()
    with pytest.raises(TlsError, match="the key is not the certificate's"):
        ClientTls(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.server.key).credentials()
    ServerTls(pki.server.cert, pki.server.key).credentials()  # a true pair passes
    ClientTls(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key).credentials()


def test_port_in_use_is_a_clear_error(pki):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        for tls in (None, ServerTls(pki.server.cert, pki.server.key)):
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
            with pytest.raises(OSError, match=r"cannot listen"):
                server_port(server, address, tls)
            server.stop(None)
