"""Moved to `mdengine.engine.config`; importing this old path warns once, and it goes in the next release."""

from ._moved import alias

_module = alias("mdengine.config", "mdengine.engine.config")
