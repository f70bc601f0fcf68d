"""Moved to `mdengine.engine.signals`; importing this old path warns once, and it goes in the next release."""

from ._moved import alias

_module = alias("mdengine.signals", "mdengine.engine.signals")
