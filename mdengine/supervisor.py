"""Moved to `mdengine.engine.supervisor`; importing this old path warns once, and it goes in the next release."""

from ._moved import alias

_module = alias("mdengine.supervisor", "mdengine.engine.supervisor")
