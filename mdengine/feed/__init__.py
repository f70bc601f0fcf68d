"""The feed process: one per exchange. Holds the WebSockets, runs the adapter, publishes into the store.

`FeedLoop` (loop.py) is the single I/O thread; `Publisher` (publisher.py) turns events into store writes;
`FeedSession` (session.py) knows the instruments and subscriptions; `run_feed` (process.py) is the body of
the OS process. See docs/feed.md.
"""

from .loop import FeedLoop, LoopOptions, Sink, Tap
from .process import run_feed
from .publisher import Publisher
from .session import FeedSession

__all__ = ["FeedLoop", "FeedSession", "LoopOptions", "Publisher", "Sink", "Tap", "run_feed"]
