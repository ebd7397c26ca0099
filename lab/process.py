"""Moved to :mod:`srv6pm.lab.emulators.launcher`; this name stays importable (the README has named it)."""

from srv6pm.lab.emulators.launcher import ChildProcess

__all__ = ["ChildProcess"]
