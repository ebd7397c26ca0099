"""The processor (``srv6pm.processor``): from counter blocks to exact loss.

``pairing`` matches the ingress, transit and egress blocks of each (flow, period)
into end-to-end and per-segment loss,
``offsets`` decides what may be committed, ``ledger`` keeps restarts from
doubling results, ``store`` maps results to InfluxDB points (as line protocol:
``lines``), ``fetch`` unpacks fetched records, ``writer`` stores and publishes
each iteration's output in the background (record batches through the shared
:mod:`srv6pm.publish`), and ``service`` is the Kafka consumer loop that ties
them together.
"""
