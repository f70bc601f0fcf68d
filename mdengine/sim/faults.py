"""Fault bookkeeping: which fault is armed for which connection/symbol, and how a frame is altered.

Pure: the server asks it what to do with each outgoing frame and REST request. All calls happen on
the simulator's event loop; ``Simulator.inject`` hops there from the test thread.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from mdengine.sim.formats.base import Out, Venue

# Armed per connection (those open when injected), consumed by that connection's next matching frame.
FRAME_FAULTS = ("skip_sequence", "duplicate", "reorder", "corrupt_checksum", "crossed_book", "bad_perp")
# Done at once on the open connections.
CONN_FAULTS = ("drop", "disconnect", "silent", "malformed_json", "server_shutdown", "idle_keepalive")
# Market-wide: next subscription / REST request, or the model itself.
MARKET_FAULTS = ("refuse_subscription", "http_429", "http_error", "slow_rest", "seq_reset", "mute_channel")
ALL_FAULTS = FRAME_FAULTS + CONN_FAULTS + MARKET_FAULTS


@dataclass
class Fault:
    name: str
    keys: set[str] | None  # model keys, None = any symbol
    params: dict[str, Any]
    remaining: dict[int, int] = field(default_factory=dict)  # conn id -> deliveries left (frame faults)
    count: int = 1  # market faults: deliveries left
    until: float | None = None  # silent: monotonic deadline, None = until cleared


class FaultBook:
    def __init__(self, venue: Venue | None) -> None:
        self.venue = venue
        self.active: list[Fault] = []
        self._held: dict[tuple[int, int, str | None], Out] = {}  # reorder: (fault id, conn, key) -> frame
        self.delivered: list[tuple[str, int | None, str | None]] = []  # (fault, conn, key) log

    def arm(self, fault: Fault) -> None:
        self.active.append(fault)

    def clear(self) -> None:
        self.active.clear()
        self._held.clear()

    def _note(self, name: str, conn: int | None, key: str | None) -> None:
        self.delivered.append((name, conn, key))

    # ---- connection state ----
    def silent(self, conn: int) -> bool:
        now = time.monotonic()
        self.active = [f for f in self.active if f.until is None or f.until > now]
        return any(f.name == "silent" and conn in f.remaining for f in self.active)

    # ---- market faults ----
    def mute(self, outs: list[Out]) -> list[Out]:
        """`outs` without the frames of a muted channel (mute_channel: one channel goes quiet, on every connection, new
        ones too, while the others and the connection itself go on)."""
        mutes = [f for f in self.active if f.name == "mute_channel"]
        if not mutes:
            return outs
        now = time.monotonic()
        live = [f for f in mutes if f.until is None or f.until > now]
        if len(live) < len(mutes):
            self.active = [f for f in self.active if f.name != "mute_channel" or f in live]
        kept = []
        for out in outs:
            channel = frame_channel(out.obj)
            f = next((f for f in live if channel and f.params["channel"] in channel and
                      (f.keys is None or out.key in f.keys)), None)
            if f is None:
                kept.append(out)
            else:
                self._note("mute_channel", None, out.key)
        return kept

    def take(self, name: str, key: str | None = None, path: str | None = None,
             channel: str | None = None) -> Fault | None:
        for f in self.active:
            if f.name != name or (key is not None and f.keys is not None and key not in f.keys):
                continue
            if path is not None and f.params.get("path", "") not in path:
                continue
            if f.params.get("channel") and f.params["channel"] not in (channel or ""):  # e.g. only the perp channel
                continue
            f.count -= 1
            if f.count <= 0:
                self.active.remove(f)
            self._note(name, None, key)
            return f
        return None

    # ---- frame faults ----
    def filter(self, conn: int, outs: list[Out], model_of: Any) -> list[Out]:
        if not any(f.name in FRAME_FAULTS for f in self.active):
            return outs
        result: list[Out] = []
        for out in outs:
            result += self._one(conn, out, model_of)
        return result

    def _one(self, conn: int, out: Out, model_of: Any) -> list[Out]:
        for f in list(self.active):
            if f.name not in FRAME_FAULTS or f.remaining.get(conn, 0) <= 0 or out.key is None:
                continue
            if f.keys is not None and out.key not in f.keys:
                continue
            held = self._held.get((id(f), conn, out.key))
            if held is not None and out.kind == "diff":  # reorder: the held frame goes after this one
                del self._held[(id(f), conn, out.key)]
                self._used(f, conn, out.key)
                return [out, held]
            res = self._apply(f, conn, out, model_of)
            if res is not None:
                return res
        return [out]

    def _used(self, f: Fault, conn: int, key: str) -> None:
        f.remaining[conn] -= 1
        self._note(f.name, conn, key)
        if not any(v > 0 for v in f.remaining.values()) and not any(k[0] == id(f) for k in self._held):
            self.active.remove(f)

    def _apply(self, f: Fault, conn: int, out: Out, model_of: Any) -> list[Out] | None:
        assert self.venue is not None
        if f.name in ("skip_sequence", "duplicate", "reorder") and out.kind != "diff":
            return None
        if f.name == "skip_sequence":
            self._used(f, conn, out.key)
            return []
        if f.name == "duplicate":
            self._used(f, conn, out.key)
            return [out, out]
        if f.name == "reorder":
            if (id(f), conn, out.key) in self._held:
                return None
            self._held[(id(f), conn, out.key)] = out
            return []
        if f.name == "bad_perp":  # a perp frame whose value is not a number: the feed must drop it, books untouched
            if out.kind != "perp":
                return None
            obj = copy.deepcopy(out.obj)
            if not corrupt_perp(obj):
                return None
            self._used(f, conn, out.key)
            return [Out(obj, out.key, out.kind)]
        if out.kind not in ("diff", "snapshot"):
            return None
        obj = copy.deepcopy(out.obj)
        if f.name == "corrupt_checksum":
            if not self.venue.corrupt_checksum(obj):
                return None
        else:  # crossed_book: a bid above the true best ask
            lists = self.venue.book_lists(obj)
            if lists is None:
                return None
            model = model_of(out.key)
            lists[0].insert(0, self.venue.level(model, model.best()[1] + 1, 1))
        self._used(f, conn, out.key)
        return [Out(obj, out.key, out.kind)]


# the value fields of the venues' perp frames (mark, index, funding, open interest, liquidation price)
_PERP_VALUES = ("markPx", "idxPx", "fundingRate", "oi", "bkPx", "markPrice", "indexPrice", "openInterest",
                "holdingAmount", "p")


def corrupt_perp(obj: Any) -> bool:
    """Make the first perp value found in `obj` (depth first) not a number; False if it has none."""
    if isinstance(obj, dict):
        for k in _PERP_VALUES:
            if k in obj and isinstance(obj[k], str | int | float):
                obj[k] = "not-a-number"
                return True
        return any(corrupt_perp(v) for v in obj.values() if isinstance(v, dict | list))
    if isinstance(obj, list):
        return any(corrupt_perp(v) for v in obj)
    return False


def frame_channel(obj: Any) -> str:
    """The channel, topic or stream a pushed frame belongs to ("" if it names none): OKX and Bitget `arg.channel`,
    Bybit `topic`, Binance's combined-stream `stream`."""
    if not isinstance(obj, dict):
        return ""
    arg = obj.get("arg")
    if isinstance(arg, dict):
        return str(arg.get("channel", ""))
    return str(obj.get("topic") or obj.get("stream") or "")
