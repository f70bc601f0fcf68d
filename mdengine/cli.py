"""Moved to `mdengine.engine.cli`; importing this old path warns once, and it goes in the next release."""

import sys

from ._moved import alias

_module = alias("mdengine.cli", "mdengine.engine.cli")

if __name__ == "__main__":
    sys.exit(_module.main())
