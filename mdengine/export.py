"""Moved to `mdengine.recording.export`; importing this old path warns once, and it goes in the next release."""

from ._moved import alias

_module = alias("mdengine.export", "mdengine.recording.export")
