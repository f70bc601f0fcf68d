"""The strategy-side client: attach to a running engine by namespace and read books and trades lock-free.

`shm` reads shared memory (Book, TradeStream, wait, following a restarted engine). See docs/client.md.
"""

from .shm import *  # noqa: F403
from .shm import __all__  # noqa: F401
