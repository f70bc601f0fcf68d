"""Perpetual data of one simulated instrument, shared by the venues' perp channels (their formats render it).

Derived from the instrument's book model so it looks like a market: the mark follows the book's mid within a few
basis points, the index follows the mark, the funding rate drifts and settles at the exchange's times (every 8 h at
00:00, 08:00 and 16:00 UTC on all four venues' default perpetuals), the next rate is announced in advance, open
interest moves, and liquidations come in bursts. Seeded per instrument: the same seed gives the same values.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass

from mdengine.sim.market import BookModel

FUNDING_PERIOD_MS = 8 * 3600 * 1000  # the UTC epoch is midnight-aligned, so multiples fall on 00, 08 and 16 UTC
_TICK_MS = 1000  # the model advances in whole seconds


@dataclass(frozen=True)
class Liquidation:
    seq: int  # 1, 2, ... per instrument
    ts: int  # ms
    sell: bool  # the liquidation order's side: a long position is closed by a SELL
    price: float
    lots: int


class PerpModel:
    BURST_CHANCE = 0.05  # per simulated second, the chance that a burst of liquidations (3-10 s, one a second) starts

    def __init__(self, model: BookModel, seed: int, funding_period_ms: int = FUNDING_PERIOD_MS) -> None:
        self.model = model
        self.rng = random.Random(f"{seed}:{model.inst.native}:{model.inst.kind}:perp")
        self.period = funding_period_ms
        self.funding_rate = 0.0001
        self.next_rate = 0.0001
        # open interest in typical orders (the book's mean_lots), so it suits any size unit (base coin, contracts of
        # 0.01 BTC or of 1 USD): it starts at 500-2,000 of them and never falls below 10
        self._order = max(1.0, model.mean_lots)
        self.open_interest_lots = round(self.rng.uniform(500, 2000) * self._order)
        self.basis = 0.0  # mark - mid, as a fraction of mid
        self.index_basis = 0.0  # index - mark, as a fraction
        self.ts = 0  # ms of the last advance (0: never)
        self.next_funding = 0
        self.burst = 0  # seconds of liquidation burst left
        self.liquidations: deque[Liquidation] = deque(maxlen=1000)
        self._liq_seq = 0

    # ------------------------------------------------------------------ state
    def mid(self) -> float:
        bid, ask = self.model.best()
        return (bid + ask) / 2 * float(self.model.inst.tick)

    def mark(self) -> float:
        return self.mid() * (1 + self.basis)

    def index(self) -> float:
        return self.mark() * (1 + self.index_basis)

    def advance(self, ts: int) -> None:
        """Bring the model to `ts` (ms), one simulated second at a time (at most a minute's worth per call)."""
        if not self.ts or ts < self.ts:  # the first call, or a driver on its own clock (perf harnesses): start there
            self.ts = ts
            self.next_funding = (ts // self.period + 1) * self.period
            return
        steps = min((ts - self.ts) // _TICK_MS, 60)
        for _ in range(steps):
            self.ts += _TICK_MS
            self._second()
        if ts - self.ts > 60 * _TICK_MS:
            self.ts = ts - ts % _TICK_MS

    def _second(self) -> None:
        r = self.rng
        self.basis = max(-0.0005, min(0.0005, self.basis + r.gauss(0, 0.00005)))
        self.index_basis = max(-0.0003, min(0.0003, self.index_basis + r.gauss(0, 0.00003)))
        self.next_rate = max(-0.003, min(0.003, self.next_rate + r.gauss(0, 0.000002)))
        self.open_interest_lots = max(round(10 * self._order), self.open_interest_lots + round(r.gauss(0, self._order)))
        if self.ts >= self.next_funding:  # settlement: the announced rate applies, a new one is predicted
            self.funding_rate = self.next_rate
            self.next_funding += self.period
        if self.burst <= 0 and r.random() < self.BURST_CHANCE:
            self.burst = r.randint(3, 10)
        if self.burst > 0:
            self.burst -= 1
            sell = r.random() < 0.5
            px = self.mark() * (1 - 0.002 if sell else 1 + 0.002)
            self._liq_seq += 1
            lots = max(1, int(r.expovariate(1 / max(self.model.mean_lots, 1.0))))
            self.liquidations.append(Liquidation(self._liq_seq, self.ts, sell, px, lots))
            self.open_interest_lots = max(round(10 * self._order), self.open_interest_lots - lots)

    def price_text(self, price: float) -> str:
        """`price` on the instrument's tick grid, as the venue writes prices."""
        tick = float(self.model.inst.tick)
        return self.model.inst.px(max(1, round(price / tick)))

    def new_liquidations(self, after_seq: int) -> list[Liquidation]:
        return [x for x in self.liquidations if x.seq > after_seq]


def model_now(model: BookModel) -> int:
    """The model's clock in ms: the time of its latest step (a driver may run it on its own clock), else now."""
    return model.last_change_ts or int(time.time() * 1000)


class PerpModels:
    """A venue's perp models, made on first use (one per book model, shared by every session)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._models: dict[tuple[str, str], PerpModel] = {}

    def of(self, model: BookModel, ts: int) -> PerpModel:
        key = (model.inst.native, model.inst.kind)
        p = self._models.get(key)
        if p is None:
            p = self._models[key] = PerpModel(model, self.seed)
        p.advance(ts)
        return p
