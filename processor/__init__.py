"""The processor (``srv6pm.processor``): from counter blocks to exact loss.

``pairing`` matches the ingress, transit and egress blocks of each (flow, period)
into end-to-end and per-segment loss,
``offsets`` decides what may be committed, ``ledger`` keeps restarts from
doubling results, ``store`` maps results to InfluxDB points (as line protocol:
``lines``), ``fetch`` unpacks fetched records, ``publish`` sends record
batches, ``writer`` stores and publishes each iteration's output in the
background, and ``service`` is the Kafka consumer loop that ties them together.
"""
