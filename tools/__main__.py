"""``python -m tools`` is the ``fedge`` command."""

import sys

from tools.cli import main

sys.exit(main())
