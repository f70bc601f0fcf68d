"""``python -m mdengine``: the same as the ``mdengine`` console script."""

import sys

from .engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
