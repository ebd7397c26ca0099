"""Moved to :mod:`srv6pm.lab.emulators.influx_front`; this name stays importable (the README has named it)."""

from srv6pm.lab.emulators.influx_front import *  # noqa: F401,F403
from srv6pm.lab.emulators.influx_front import __all__  # noqa: F401
