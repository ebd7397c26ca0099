"""The local lab (``srv6pm.lab``): the whole pipeline on one machine.

Two halves. The orchestration of a lab run: ``scenario`` reads the YAML
scenario, ``topology`` derives the addressing plan, ``control`` the collector
configuration, ``network`` builds it as network namespaces with SRv6 routes,
``traffic`` sends the test packets (one generator per source host) and
``arrivals`` counts what reaches the destination hosts, ``rates`` compares
what was sent with the configured rates, ``runner`` orchestrates it all,
``output`` and ``latency`` print results and ``leftovers`` removes what killed
labs left behind.

The emulators and embedded services (:mod:`srv6pm.lab.emulators`): the link
delay element and its NFQUEUE client, the embedded broker, the embedded
InfluxDB and its v2-write front, behind one launcher. The old names
``srv6pm.lab.broker``, ``influxdb``, ``influx_front``, ``process`` and
``delay`` still import (and ``python -m srv6pm.lab.delay`` still runs).
"""
