"""Moved to `mdengine.recording.tap`; importing this old path warns once, and it goes in the next release."""

from ._moved import alias

_module = alias("mdengine.recorder", "mdengine.recording.tap")
