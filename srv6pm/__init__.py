"""srv6pm: performance monitoring for SRv6 networks.

The shared core lives here (period clock, record schemas, Kafka and InfluxDB
helpers, logging). The components live in their own folders and are imported
as sub-packages: ``srv6pm.exporter`` (node-exporter/), ``srv6pm.processor``
(processor/) and ``srv6pm.lab`` (lab/).
"""

__version__ = "0.1.0"
