"""Moved to `mdengine.engine.control`; importing this old path warns once, and it goes in the next release."""

from ._moved import alias

_module = alias("mdengine.control", "mdengine.engine.control")
