"""The processor (``srv6pm.processor``): from counter blocks to exact loss.

``pairing`` matches the ingress, transit and egress blocks of each (flow, period)
into end-to-end and per-segment loss,
``offsets`` decides what may be committed, ``ledger`` keeps restarts from
doubling results, ``store`` maps results to InfluxDB points, and ``service``
is the Kafka consumer loop that ties them together.
"""
