"""The node exporter (``srv6pm.exporter``): runs on every router.

It marks the monitored SRv6 flows with the alternate-marking colour
(RFC 9341) at their ingress, counts packets and bytes per flow and colour at
the ingress and egress (``dataplane`` over ``nft``), turns the counters into
per-period blocks (``blocks``) and publishes them to ``srv6pm.counters``
(``service``) through the ``outbox``, which keeps what it cannot publish in
a bounded on-disk buffer (``spool``) and reads back before a doubtful retry
(``readback``). It runs STAMP sessions and the reflector (``probes``) and
serves the southbound gRPC API (``api``), through which SRv6 routes
(``routes``), monitored flows and STAMP sessions are applied and kept
(``intent``). Configuration: ``config``.
"""
