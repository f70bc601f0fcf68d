"""Instruments and symbol naming: ccxt-style unified symbols and exchange-native ids.

Unified: ``BASE/QUOTE`` for spot, ``BASE/QUOTE:SETTLE`` for perpetual swaps (``BTC/USDT:USDT`` linear,
``BTC/USD:BTC`` inverse), ``BASE/QUOTE:SETTLE-YYMMDD`` for dated futures.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from .core.types import MarketKind
from .errors import UnknownSymbol


def __getattr__(name: str) -> object:
    if name == "UnknownSymbolError":  # the second unknown-symbol type, merged into mdengine.errors.UnknownSymbol
        warnings.warn("mdengine.symbols.UnknownSymbolError is deprecated; use mdengine.UnknownSymbol",
                      DeprecationWarning, stacklevel=2)
        return UnknownSymbol
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class Instrument:
    exchange: str  # one of mdengine.exchanges.EXCHANGES
    market: str  # the exchange's market/category: "spot", "usdm", "SWAP", "linear", "USDT-FUTURES", ...
    native: str  # id as the exchange writes it in REST and payloads
    unified: str
    kind: int  # MarketKind
    base: str
    quote: str
    settle: str = ""
    tick_size: float = 0.0
    lot_size: float = 0.0
    contract_value: float = 1.0  # base units (linear) or quote units (inverse) per contract; 1.0 on spot

    @property
    def key(self) -> tuple[str, str]:
        return (self.market, self.native)


def unified_symbol(base: str, quote: str, kind: int, settle: str = "", expiry: str = "") -> str:
    if kind == MarketKind.SPOT:
        return f"{base}/{quote}"
    s = f"{base}/{quote}:{settle or (base if kind == MarketKind.INVERSE else quote)}"
    return f"{s}-{expiry}" if expiry else s


class InstrumentIndex:
    """Look instruments up by unified symbol or native id (optionally within a market)."""

    def __init__(self, instruments: list[Instrument] | None = None) -> None:
        self._by_key: dict[tuple[str, str], Instrument] = {}
        self._by_name: dict[str, list[Instrument]] = {}
        for inst in instruments or []:
            self.add(inst)

    def add(self, inst: Instrument) -> None:
        """Add `inst`, replacing the instrument of the same key (a fresh list over a cached or synthesised one)."""
        old = self._by_key.get(inst.key)
        if old is not None:
            for name in {old.unified, old.native, old.native.upper()}:
                self._by_name[name] = [i for i in self._by_name.get(name, []) if i.key != inst.key]
        self._by_key[inst.key] = inst
        for name in {inst.unified, inst.native, inst.native.upper()}:
            self._by_name.setdefault(name, []).append(inst)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self):
        return iter(self._by_key.values())

    def get(self, key: tuple[str, str]) -> Instrument | None:
        return self._by_key.get(key)

    def resolve(self, symbol: str, market: str | None = None) -> Instrument:
        """The one instrument `symbol` names. A native id listed in several markets (BTCUSDT on spot and
        perps) needs `market`, or the unified form, which is never ambiguous."""
        cands = self._by_name.get(symbol) or self._by_name.get(symbol.upper()) or []
        if market is not None:
            cands = [i for i in cands if i.market == market]
        exact = [i for i in cands if i.unified == symbol]
        if exact:
            return exact[0]
        if len(cands) == 1:
            return cands[0]
        if not cands:
            raise UnknownSymbol(f"unknown symbol {symbol!r}" + (f" in market {market!r}" if market else ""))
        spot = [i for i in cands if i.kind == MarketKind.SPOT]
        if len(spot) == 1:  # a bare native id means spot, like ccxt
            return spot[0]
        raise UnknownSymbol(f"{symbol!r} is ambiguous: " + ", ".join(sorted(i.unified for i in cands)))
