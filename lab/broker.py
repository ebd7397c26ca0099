"""Moved to :mod:`srv6pm.lab.emulators.broker`; this name stays importable (the README has named it)."""

from srv6pm.lab.emulators.broker import *  # noqa: F401,F403
from srv6pm.lab.emulators.broker import __all__  # noqa: F401
