"""Shared vocabulary of the renderers: outgoing frames, replies, the session and venue interfaces."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdengine.sim.config import SimConfig
from mdengine.sim.market import BookModel, Instrument, Step


@dataclass
class Out:
    """One outgoing frame. ``obj`` is JSON-able, or ``str`` sent verbatim (pong)."""

    obj: Any
    key: str | None = None  # model key of the symbol it is about
    kind: str = "ctl"  # "ctl" | "snapshot" | "diff" | "trade"


@dataclass
class Reply:
    frames: list[Out] = field(default_factory=list)
    close: tuple[int, str] | None = None  # close the connection after sending
    ping: bool = False  # it answered a heartbeat


_ids = itertools.count(1)


def conn_id() -> str:
    """An opaque per-connection id, as OKX/Bybit put in acks."""
    return f"{(next(_ids) * 2654435761) & 0xFFFFFFFF:08x}"


def now_ms() -> int:
    return int(time.time() * 1000)


class BadParam(ValueError):
    """A query parameter the exchange would refuse; the server answers it with ``Venue.bad_param``."""

    def __init__(self, name: str, value: str) -> None:
        super().__init__(f"bad parameter {name}={value!r}")
        self.name, self.value = name, value


def int_param(q: dict[str, str], name: str, default: int, hi: int | None = None) -> int:
    """Query parameter ``name`` as a whole number (ASCII digits only, as the exchanges read it), ``default`` when
    absent, at most ``hi``; anything else raises BadParam."""
    raw = q.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise BadParam(name, raw)
    return int(raw) if hi is None else min(hi, int(raw))


class Session:
    """Per-connection protocol state. Pure: the server feeds text and model steps in."""

    def __init__(self, venue: Venue, path: str, query: dict[str, str]) -> None:
        self.venue = venue
        self.path = path
        self.query = query
        self.keys: set[str] = set()  # model keys with at least one subscription
        # fault hook, set by the server: refuse this subscription of `key` on `channel` (its channel, topic or stream)?
        self.refuse: Callable[[str, str], bool] = lambda key, channel="": False
        self.opened = time.monotonic()
        self.last_in = self.opened  # last client message
        self.last_ping = self.opened
        self.subscribed_any = False

    def open(self) -> list[Out]:
        return []

    def handle(self, text: str) -> Reply:
        raise NotImplementedError

    def step(self, key: str, model: BookModel, st: Step) -> list[Out]:
        raise NotImplementedError

    def idle(self, now: float) -> list[Out]:
        """Periodic call (also while paused): keep-alive frames."""
        return []

    def idle_close(self, now: float, last_out: float) -> tuple[int, str] | None:
        """Close code/reason if the exchange would cut this connection now."""
        return None


class Venue:
    """One simulated market (one port): its instruments, models, sessions and REST."""

    name = ""

    def __init__(self, instruments: list[Instrument], seed: int, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.instruments = {self.key(i): i for i in instruments}
        self.models = {k: BookModel(i, seed, cfg.levels, self.id_gaps) for k, i in self.instruments.items()}

    id_gaps = False

    def list_instrument(self, inst: Instrument, seed: int) -> None:
        """List `inst` now: its instrument lists name it and its model starts ticking."""
        k = self.key(inst)
        self.instruments[k] = inst
        self.models.setdefault(k, BookModel(inst, seed, self.cfg.levels, self.id_gaps))

    def delist(self, native: str) -> None:
        """Stop listing `native` (every category's): the instrument lists no longer name it."""
        for k in [k for k, i in self.instruments.items() if i.native == native]:
            del self.instruments[k]

    @staticmethod
    def key(inst: Instrument) -> str:
        return inst.native

    def keys_for(self, symbol: str | None) -> list[str]:
        """Model keys a test names: an exact key, or a bare native id across categories."""
        if symbol is None:
            return list(self.models)
        if symbol in self.models:
            return [symbol]
        keys = [k for k, i in self.instruments.items() if i.native == symbol]
        if not keys:
            raise KeyError(f"{self.name}: unknown symbol {symbol!r}; known: {sorted(self.models)}")
        return keys

    def seq_of(self, model: BookModel, depth: int = 25) -> int:
        """The id a snapshot of ``model``'s top ``depth`` levels carries (for ``Simulator.model_book``)."""
        return model.update_id

    def session(self, path: str, query: dict[str, str]) -> Session | None:
        raise NotImplementedError

    def rest(self, path: str, q: dict[str, str]) -> tuple[int, Any] | None:
        """None = unknown path (404)."""
        raise NotImplementedError

    def usage_headers(self, key: str, used: float) -> list[tuple[str, str]]:
        """Headers reporting the IP's use of REST budget `key` (`used` in its current window); none by default."""
        return []

    def too_many(self) -> Any:
        raise NotImplementedError

    def bad_param(self, name: str, value: str) -> tuple[int, Any]:
        """(status, body) answering a query parameter this exchange cannot read (BadParam)."""
        return 400, {"error": f"invalid parameter {name}: {value!r}"}

    def shutdown_notice(self, session: Session) -> list[Out]:
        raise ValueError(f"{self.name} has no shutdown notice")

    def level(self, model: BookModel, ticks: int, lots: int) -> list[Any]:
        return [model.inst.px(ticks), model.inst.qty(lots)]

    def book_lists(self, obj: Any) -> tuple[list, list] | None:
        """The (bids, asks) lists inside a book frame, for frame-level faults."""
        raise NotImplementedError

    def corrupt_checksum(self, obj: Any) -> bool:
        return False
