"""Moved to `mdengine.engine.configfile`; importing this old path warns once, and it goes in the next release."""

from ._moved import alias

_module = alias("mdengine.configfile", "mdengine.engine.configfile")
