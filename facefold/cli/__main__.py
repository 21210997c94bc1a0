"""``python -m facefold.cli``: the ``facefold`` command."""

import sys

from facefold.cli import main

sys.exit(main())
