"""Moved to `mdengine.engine.status`; importing this old path warns once, and it goes in the next release."""

from ._moved import alias

_module = alias("mdengine.status", "mdengine.engine.status")
