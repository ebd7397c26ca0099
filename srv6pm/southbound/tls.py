"""TLS for the southbound API: certificates and keys from PEM files.

The exporter serves with :class:`ServerTls`; given a client CA it requires
every client to present a certificate signed by that CA (mutual TLS). The
collector connects with :class:`ClientTls`. Files are read when
``credentials()`` is called, so a restart picks up renewed certificates;
a file that is missing, unreadable or not PEM, or a key that is not the
certificate's, raises :class:`TlsError` naming the file. Plaintext is used only where the caller passes
``tls=None`` explicitly (:func:`server_port`, :func:`channel`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from srv6pm.errors import InputError

__all__ = ["ClientTls", "ServerTls", "TlsError", "channel", "server_port"]

TARGET_NAME_OVERRIDE = "grpc.ssl_target_name_override"


class TlsError(InputError, ValueError):
    """A TLS setting cannot be used: a missing, unreadable or malformed file, a lone cert or key."""


def _pem(what: str, path: str | Path, label: str) -> bytes:
    """The bytes of PEM file ``path``; ``label`` ("CERTIFICATE", "PRIVATE KEY") must occur in a BEGIN line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{what} {str(path)!r}: cannot read: {exc.strerror or exc}") from None
    begin = b"-----BEGIN "
    if not any(line.startswith(begin) and label.encode() in line for line in data.splitlines()):
        raise TlsError(f"{what} {str(path)!r}: not a PEM file with a {label}")
    return data


def _pair(cert_file: str | Path, key_file: str | Path) -> None:
    """:class:`TlsError` unless ``key_file`` holds the private key of ``cert_file``'s certificate (gRPC would
    take the pair and fail each handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        why = "the key is not the certificate's" if "KEY_VALUES_MISMATCH" in str(exc) else (exc.reason or str(exc))
        raise TlsError(f"cert_file {str(cert_file)!r} and key_file {str(key_file)!r}: {why}") from None
    except OSError as exc:  # read just before by _pem: gone meanwhile
        raise TlsError(f"cert_file {str(cert_file)!r} or key_file {str(key_file)!r}: cannot read: "
                       f"{exc.strerror or exc}") from None


@dataclass(frozen=True)
class ServerTls:
    """Server certificate chain and key; with ``client_ca_file``, client certificates are required."""

    cert_file: str | Path
    key_file: str | Path
    client_ca_file: str | Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        cert = _pem("cert_file", self.cert_file, "CERTIFICATE")
        key = _pem("key_file", self.key_file, "PRIVATE KEY")
        ca = _pem("client_ca_file", self.client_ca_file, "CERTIFICATE") if self.client_ca_file else None
        _pair(self.cert_file, self.key_file)
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


@dataclass(frozen=True)
class ClientTls:
    """What a client trusts (``ca_file``; None: the system's roots) and, for mutual TLS, who it is.

    ``cert_file`` and ``key_file`` go together. ``server_name`` overrides the
    name checked against the server's certificate (when connecting by address).
    """

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise TlsError("cert_file and key_file: give both or neither")

    def credentials(self) -> grpc.ChannelCredentials:
        ca = _pem("ca_file", self.ca_file, "CERTIFICATE") if self.ca_file else None
        cert = _pem("cert_file", self.cert_file, "CERTIFICATE") if self.cert_file else None
        key = _pem("key_file", self.key_file, "PRIVATE KEY") if self.key_file else None
        if self.cert_file and self.key_file:
            _pair(self.cert_file, self.key_file)
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def options(self) -> list[tuple[str, str]]:
        """Channel options this setting needs (the server name override)."""
        return [(TARGET_NAME_OVERRIDE, self.server_name)] if self.server_name else []


def server_port(server: grpc.Server, address: str, tls: ServerTls | None) -> int:
    """Add a listening port to ``server``: TLS with ``tls``, plaintext only when it is None.

    Returns the bound port (useful with ``host:0``). ``OSError`` if it cannot
    bind; :class:`TlsError` if the TLS files cannot be used.
    """
    try:
        port = (server.add_insecure_port(address) if tls is None
                else server.add_secure_port(address, tls.credentials()))
    except RuntimeError:
        port = 0
    if not port:
        raise OSError(f"address {address!r}: cannot listen (in use, not local, or not host:port)")
    return port


def channel(address: str, tls: ClientTls | None, options=()) -> grpc.Channel:
    """A channel to ``address`` (``host:port``): TLS with ``tls``, plaintext only when it is None."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, tls.credentials(), options=list(options) + tls.options())
