"""Generated code of ``proto/srv6pm/southbound/v1/southbound.proto`` (grpcio-tools 1.85.1). Do not edit.

Regenerate from the repository root with::

    python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. \
        proto/srv6pm/southbound/v1/southbound.proto
"""
