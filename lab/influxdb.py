"""Moved to :mod:`srv6pm.lab.emulators.influxdb`; this name stays importable (the README has named it)."""

from srv6pm.lab.emulators.influxdb import *  # noqa: F401,F403
from srv6pm.lab.emulators.influxdb import __all__  # noqa: F401
