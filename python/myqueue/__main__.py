"""``python -m myqueue``: the ``myqueue`` command (see ``myqueue.cli``)."""

import sys

from myqueue.cli import main

sys.exit(main())
