import sys

from srv6pm.cli import main

sys.exit(main())
