"""mdengine: exchange order books and trades in shared memory for local strategy processes."""

__version__ = "0.1.0"
