"""The southbound API between the collector and the node exporters (gRPC, ``srv6pm.southbound.v1``)."""
