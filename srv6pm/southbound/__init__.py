"""The southbound API between the collector and the node exporters (gRPC, ``srv6pm.southbound.v1``).

``pb`` holds the messages and enums, ``rpc`` the stub and servicer of the
``NodeExporter`` service; :mod:`.validate` checks and normalises requests.
"""

from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.southbound.v1 import southbound_pb2_grpc as rpc
from srv6pm.southbound.validate import InvalidArgument, key_of

__all__ = ["API_VERSION", "DEFAULT_PORT", "InvalidArgument", "key_of", "pb", "rpc"]

API_VERSION = "v1"
DEFAULT_PORT = 50051
