"""Moved to `mdengine.recording.writer`; importing this old path warns once, and it goes in the next release."""

import sys

from ._moved import alias

_module = alias("mdengine.record_writer", "mdengine.recording.writer")

if __name__ == "__main__":
    sys.exit(_module.main())
