"""``python -m oct_wsss.cli``: the same as the ``oct-wsss`` console script."""

import sys

from oct_wsss.cli import main

sys.exit(main())
