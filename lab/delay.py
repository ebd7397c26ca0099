"""Moved to :mod:`srv6pm.lab.emulators.delay`; this name stays importable (the README has named it)."""

from srv6pm.lab.emulators.delay import *  # noqa: F401,F403
from srv6pm.lab.emulators.delay import __all__  # noqa: F401

if __name__ == "__main__":  # python -m srv6pm.lab.delay, as before the move
    import sys

    sys.exit(main())  # noqa: F405
