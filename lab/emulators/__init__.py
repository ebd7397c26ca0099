"""What the lab puts in place of production's parts, each behind one launcher (``srv6pm.lab.emulators``).

``delay`` emulates a long link (a user-space delay element on NFQUEUE, over
the NFQUEUE client ``nfqueue``); ``broker`` runs the embedded Kafka-compatible
broker (Tansu) and ``influxdb`` the embedded InfluxDB (influxd 1.x, published
through ``influx_front``, which adds the v2 write API). ``launcher`` is what
they share: supervised child processes and temporary folders marked with
their owner.

The tests and benchmarks use these without a lab; the lab's orchestration
(:mod:`srv6pm.lab.runner` and the modules beside it) uses them, never the
other way round: nothing here imports the orchestration.
"""
