"""Pure market model: one order book per instrument, random-walking, with sequence counters.

The mid follows a mean-reverting walk around the instrument's initial price (stationary spread about BAND of it, hard
bounds at 1/MAX_MOVE and MAX_MOVE times it), so a run of any length (``rate_hz=0`` steps as fast as it can) keeps
every price positive and realistic; no level is ever quoted at or below zero ticks.

Prices and sizes are integers (ticks, lots) inside the model, so ordering and equality are exact;
``Instrument.px``/``qty`` turn them into the wire strings of the venue (fixed decimals or stripped).
Everything is driven by ``random.Random`` seeded from (seed, instrument id): same seed, same book.
"""

from __future__ import annotations

import functools
import math
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

Levels = list[tuple[str, str]]
BAND = 0.02  # the walk's stationary standard deviation, as a fraction of the initial price
MAX_MOVE = 2.0  # the mid never leaves [initial / MAX_MOVE, initial * MAX_MOVE]


@functools.cache
def _step(step: str) -> tuple[int, int]:
    """A tick or lot size as (integer mantissa, decimals): "0.0100" -> (100, 4). The simulator formats tens of
    thousands of levels a second at whole-market size; integers do it several times faster than Decimal."""
    d = Decimal(step)
    exp = max(0, -d.as_tuple().exponent)
    return int(d.scaleb(exp)), exp


@dataclass(frozen=True)
class Instrument:
    """One tradable instrument as a venue lists it."""

    native: str  # venue id: "BTCUSDT", "BTC-USDT-SWAP", ...
    unified: str  # "BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC"
    kind: str  # "spot" | "linear" | "inverse"
    tick: str
    lot: str
    price: float  # initial mid
    ct_val: str = ""  # contract value (OKX derivatives, Bybit inverse: quote units); "" = sizes in base currency
    px_dp: int | None = None  # decimals on the wire; None = decimals of tick
    qty_dp: int | None = None
    strip: bool = False  # OKX writes "8477" not "8477.00"
    pad_zero: bool = False  # Binance removes a level with "0.00000000"; the others send "0"

    @property
    def base(self) -> str:
        return self.unified.split("/")[0]

    @property
    def quote(self) -> str:
        return self.unified.split("/")[1].split(":")[0]

    def _fmt(self, n: int, step: str, dp: int | None) -> str:
        mantissa, exp = _step(step)
        places = dp if dp is not None else max(0, exp)
        if n >= 0 and places >= exp:  # exact in integers: n * step has `exp` decimals, padded to `places`
            digits = str(n * mantissa * 10 ** (places - exp)).rjust(places + 1, "0")
            s = f"{digits[:-places]}.{digits[-places:]}" if places else digits
        else:  # rounding to fewer decimals than the step has, or a negative count: Decimal's rules
            s = f"{Decimal(n) * Decimal(step):.{places}f}"
        if self.strip and "." in s:
            s = s.rstrip("0").rstrip(".")
        return s

    def px(self, ticks: int) -> str:
        return self._fmt(ticks, self.tick, self.px_dp)

    def qty(self, lots: int) -> str:
        if lots == 0 and not self.pad_zero:
            return "0"
        return self._fmt(lots, self.lot, self.qty_dp)


@dataclass(frozen=True)
class Trade:
    first_id: int  # first fill id; fills are first_id..last_id
    last_id: int
    agg_id: int
    ticks: int
    lots: int
    fills: tuple[int, ...]  # lots per fill, sums to ``lots``
    taker_buy: bool
    ts: int
    uid: str  # UUID-style id (Bybit derivatives)


@dataclass
class Step:
    """What one model step changed. Side dicts map ticks -> lots, 0 = level removed."""

    bids: dict[int, int]
    asks: dict[int, int]
    prev_id: int  # update id before the step (Binance pu, OKX prevSeqId)
    first_id: int  # U
    last_id: int  # u / seqId
    book_seq: int  # +1 per step (Bitget seq; Bybit u of a topic that sees every level); 1 after a reset
    ts: int
    trades: list[Trade] = field(default_factory=list)
    reset: bool = False  # the sequence was reset before this step
    views: dict[int, tuple[dict[int, int], dict[int, int]]] = field(default_factory=dict)
    view_seqs: dict[int, int] = field(default_factory=dict)  # per view depth: its own +1 per visible change

    def diff(self, depth: int, levels: int) -> tuple[dict[int, int], dict[int, int]]:
        """Changes as seen by a top-``depth`` subscriber."""
        if depth >= levels:
            return self.bids, self.asks
        return self.views[depth]

    def seq(self, depth: int) -> int:
        """The update id a top-``depth`` topic carries after this step (Bybit ``u``, see BookModel.topic_seq)."""
        return self.view_seqs.get(depth, self.book_seq)


class BookModel:
    """Order book of one instrument, ``levels`` price levels per side."""

    def __init__(self, inst: Instrument, seed: int, levels: int = 100, id_gaps: bool = False) -> None:
        self.inst = inst
        self.levels = levels
        self.id_gaps = id_gaps  # USDⓈ-M: U is not prev u + 1
        self.rng = random.Random(f"{seed}:{inst.native}:{inst.kind}")
        r = self.rng
        self.update_id = r.randint(10**8, 10**9)
        self.book_seq = r.randint(10**5, 10**7)
        self.trade_id = r.randint(10**8, 10**9)
        self.agg_id = r.randint(10**7, 10**8)
        self.tick_d = Decimal(inst.tick)
        self.mid = self.mid0 = max(1.0, inst.price / float(inst.tick))  # in ticks
        self.gap = max(1, int(inst.price * 0.0001 / float(inst.tick)))  # up to ~1 bp between levels
        self.vol = max(0.5, self.gap * 0.4)
        # pull back toward mid0 per step: an Ornstein-Uhlenbeck step whose stationary deviation is BAND * mid0
        # (or less: at most half the distance per step, for instruments whose tick is coarse for their price)
        self.reversion = min(0.5, self.vol ** 2 / (2 * (BAND * self.mid0) ** 2))
        self.mid_bounds = (max(1.0, self.mid0 / MAX_MOVE), self.mid0 * MAX_MOVE)
        self.mean_lots = self._mean_lots()
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.trades: deque[Trade] = deque(maxlen=200)
        self._views: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        self._view_seqs: dict[int, int] = {}
        self._reset = False
        self._reset_prev = 0
        self.last_change_ts = 0
        top = math.floor(self.mid)
        self._fill(self.bids, top, -1, {})
        self._fill(self.asks, top + 1, 1, {})

    def _mean_lots(self) -> float:
        inst = self.inst
        notional = 20_000.0
        if inst.ct_val and inst.kind == "inverse":
            units = notional / float(inst.ct_val)
        elif inst.ct_val:
            units = notional / inst.price / float(inst.ct_val)
        else:
            units = notional / inst.price
        return max(1.0, units / float(inst.lot))

    def _rand_lots(self) -> int:
        return max(1, int(self.rng.expovariate(1.0 / self.mean_lots)))

    def _fill(self, side: dict[int, int], start: int, sign: int, ch: dict[int, int]) -> None:
        # Extend the far end of a side until it holds ``levels`` levels.
        edge = (min(side) if sign < 0 else max(side)) if side else start - sign
        while len(side) < self.levels:
            edge += sign * self.rng.randint(1, self.gap)
            if edge < 1:  # no price at or below zero: a book priced near its tick holds fewer bid levels
                return
            side[edge] = ch[edge] = self._rand_lots()

    # ---- views for depth-limited incremental channels (Bybit 50, ...) ----
    def register_view(self, depth: int) -> None:
        if depth < self.levels and depth not in self._views:
            self._views[depth] = self._top_dicts(depth)
            self._view_seqs[depth] = self.book_seq

    def topic_seq(self, depth: int) -> int:
        """The update id of a top-``depth`` topic: +1 per step that changes what that topic shows, so a step
        that changes only deeper levels (or sets a level to the size it had) costs the topic no id and its pushes
        stay consecutive; after a reset every topic starts again at 1. Unregistered depths see every step."""
        return self._view_seqs.get(depth, self.book_seq)

    def _top_dicts(self, n: int) -> tuple[dict[int, int], dict[int, int]]:
        b = sorted(self.bids, reverse=True)[:n]
        a = sorted(self.asks)[:n]
        return {t: self.bids[t] for t in b}, {t: self.asks[t] for t in a}

    # ---- reading ----
    def top(self, n: int) -> tuple[Levels, Levels]:
        px, qty = self.inst.px, self.inst.qty
        b = sorted(self.bids, reverse=True)[:n]
        a = sorted(self.asks)[:n]
        return [(px(t), qty(self.bids[t])) for t in b], [(px(t), qty(self.asks[t])) for t in a]

    def best(self) -> tuple[int, int]:
        return max(self.bids), min(self.asks)

    def render(self, side: dict[int, int], bids: bool) -> Levels:
        px, qty = self.inst.px, self.inst.qty
        return [(px(t), qty(side[t])) for t in sorted(side, reverse=bids)]

    # ---- mutation ----
    def reset_sequence(self) -> None:
        """Exchange restart/maintenance: sequence counters start again small."""
        if not self._reset:
            self._reset_prev = self.update_id
        self.update_id = self.rng.randint(1, 50)
        self.book_seq = 0
        self._reset = True

    def step(self, ts: int) -> Step:
        r = self.rng
        cb: dict[int, int] = {}
        ca: dict[int, int] = {}

        def put(side: dict[int, int], ch: dict[int, int], t: int, lots: int) -> None:
            if lots > 0:
                side[t] = lots
            else:
                side.pop(t, None)
            ch[t] = lots

        lo, hi = self.mid_bounds
        self.mid = min(hi, max(lo, self.mid + r.gauss(0.0, self.vol) - self.reversion * (self.mid - self.mid0)))
        bid_max = math.floor(self.mid)
        for t in [t for t in self.bids if t > bid_max]:
            put(self.bids, cb, t, 0)
        for t in [t for t in self.asks if t <= bid_max]:
            put(self.asks, ca, t, 0)
        if not self.bids or max(self.bids) < bid_max - self.gap:
            put(self.bids, cb, max(1, bid_max - r.randint(0, self.gap // 4)), self._rand_lots())
        if not self.asks or min(self.asks) > bid_max + 1 + self.gap:
            put(self.asks, ca, bid_max + 1 + r.randint(0, self.gap // 4), self._rand_lots())
        for side, ch, desc in ((self.bids, cb, True), (self.asks, ca, False)):
            near = sorted(side, reverse=desc)[:20]
            for _ in range(r.randint(1, 3)):
                t = r.choice(near)
                put(side, ch, t, 0 if r.random() < 0.1 and len(side) > 5 else self._rand_lots())
        trades = self._trades(ts, put, cb, ca) if r.random() < 0.4 else []
        for side, ch, desc in ((self.bids, cb, True), (self.asks, ca, False)):
            if len(side) > self.levels:  # trim the far end (no sort when nothing is to go)
                for t in sorted(side, reverse=not desc)[: len(side) - self.levels]:
                    put(side, ch, t, 0)
            self._fill(side, bid_max if desc else bid_max + 1, -1 if desc else 1, ch)
        return self._finish(cb, ca, trades, ts)

    def _trades(self, ts: int, put, cb: dict[int, int], ca: dict[int, int]) -> list[Trade]:
        r = self.rng
        buy = r.random() < 0.5
        side, ch = (self.asks, ca) if buy else (self.bids, cb)
        t = min(side) if buy else max(side)
        avail = side[t]
        lots = r.randint(1, max(1, min(avail, int(self.mean_lots))))
        put(side, ch, t, avail - lots)
        n = min(lots, r.randint(1, 3))
        fills = [lots // n] * n
        fills[-1] += lots - sum(fills)
        first = self.trade_id + 1
        self.trade_id += n
        self.agg_id += 1
        uid = str(uuid.UUID(int=r.getrandbits(128), version=4))
        tr = Trade(first, self.trade_id, self.agg_id, t, lots, tuple(fills), buy, ts, uid)
        self.trades.append(tr)
        return [tr]

    def _finish(self, cb: dict[int, int], ca: dict[int, int], trades: list[Trade], ts: int) -> Step:
        prev = self._reset_prev if self._reset else self.update_id
        first = (self.update_id if self._reset else prev) + 1 + (self.rng.randint(1, 20) if self.id_gaps else 0)
        self.update_id = first + max(1, len(cb) + len(ca)) - 1
        self.book_seq += 1
        reset, self._reset = self._reset, False
        views = {}
        for depth, (ob, oa) in self._views.items():
            nb, na = self._top_dicts(depth)
            vb, va = views[depth] = (_dict_diff(ob, nb), _dict_diff(oa, na))
            self._views[depth] = (nb, na)
            if reset:
                self._view_seqs[depth] = self.book_seq
            elif vb or va:
                self._view_seqs[depth] += 1
        self.last_change_ts = ts
        return Step(cb, ca, prev, first, self.update_id, self.book_seq, ts, trades, reset, views,
                    dict(self._view_seqs))


def _dict_diff(old: dict[int, int], new: dict[int, int]) -> dict[int, int]:
    out = {t: q for t, q in new.items() if old.get(t) != q}
    out.update({t: 0 for t in old if t not in new})
    return out


def checksum_string(bids: Levels, asks: Levels, n: int = 25) -> str:
    """OKX (legacy) / Bitget check string: bid1px:bid1sz:ask1px:ask1sz:..., short side skipped."""
    parts: list[str] = []
    for i in range(n):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    return ":".join(parts)


def crc32_signed(text: str) -> int:
    import zlib

    v = zlib.crc32(text.encode())
    return v - (1 << 32) if v >= 1 << 31 else v
