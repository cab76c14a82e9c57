"""``python -m rpckit``: the ``rpckit`` command line, where the console script is not on PATH."""

import sys

from rpckit.cli._main import main

sys.exit(main())
