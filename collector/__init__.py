"""The collector: the control plane of srv6pm.

It reads a declarative configuration (nodes, links, flows, STAMP sessions),
drives every node exporter over the southbound gRPC API until the network is
what the configuration says, and keeps the topology with the latest loss and
delay figures in a graph (ArangoDB).
"""
