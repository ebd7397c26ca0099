"""The southbound API between the collector and the node exporters (gRPC, ``srv6pm.southbound.v1``).

``pb`` holds the messages and enums, ``rpc`` the stub and servicer of the
``NodeExporter`` service; :mod:`.validate` checks and normalises requests,
:mod:`.tls` makes TLS credentials from PEM files, :mod:`.client` is the
collector's typed client of one exporter.
"""

from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.southbound.v1 import southbound_pb2_grpc as rpc
from srv6pm.southbound.validate import InvalidArgument, key_of
from srv6pm.southbound.tls import ClientTls, ServerTls, TlsError, channel, server_port
from srv6pm.southbound.client import ExporterClient, SouthboundError, ref_of

__all__ = [
    "API_VERSION", "DEFAULT_PORT", "ClientTls", "ExporterClient", "InvalidArgument", "ServerTls",
    "SouthboundError", "TlsError", "channel", "key_of", "pb", "ref_of", "rpc", "server_port",
]

API_VERSION = "v1"
DEFAULT_PORT = 50051
