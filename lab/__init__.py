"""The local lab (``srv6pm.lab``): the whole pipeline on one machine.

``scenario`` reads the YAML scenario, ``topology`` derives the addressing
plan, ``network`` builds it as network namespaces with SRv6 routes, ``broker``
and ``influxdb`` run the embedded Kafka-compatible broker and InfluxDB
(``influx_front`` gives the old engine the v2 write API), ``traffic`` sends
the test packets, ``runner`` orchestrates it all and ``output`` prints results.
"""
