"""The local lab (``srv6pm.lab``): the whole pipeline on one machine.

``scenario`` reads the YAML scenario, ``topology`` derives the addressing
plan, ``network`` builds it as network namespaces with SRv6 routes, ``broker``
and ``influxdb`` run the embedded Kafka-compatible broker and InfluxDB
(``influx_front`` gives the old engine the v2 write API), ``traffic`` sends
the test packets (one generator per source host), ``rates`` compares what it
sent with the configured rates, ``runner`` orchestrates it all, ``output``
prints results and ``leftovers`` removes what killed labs left behind.
"""
