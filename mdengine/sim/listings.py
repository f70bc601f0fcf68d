"""Default instruments per market, under each exchange's native ids, with realistic tick/lot sizes."""

from __future__ import annotations

from dataclasses import replace

from mdengine.sim.market import Instrument as I  # noqa: N817

_PX = {"BTC": 65000.0, "ETH": 3200.0, "SOL": 150.0}

DEFAULTS: dict[str, list[I]] = {
    "binance-spot": [  # spot strings carry 8 decimals on the wire
        I("BTCUSDT", "BTC/USDT", "spot", "0.01000000", "0.00001000", _PX["BTC"], px_dp=8, qty_dp=8, pad_zero=True),
        I("ETHUSDT", "ETH/USDT", "spot", "0.01000000", "0.00010000", _PX["ETH"], px_dp=8, qty_dp=8, pad_zero=True),
        I("SOLUSDT", "SOL/USDT", "spot", "0.01000000", "0.00100000", _PX["SOL"], px_dp=8, qty_dp=8, pad_zero=True),
    ],
    "binance-usdm": [
        I("BTCUSDT", "BTC/USDT:USDT", "linear", "0.10", "0.001", _PX["BTC"], px_dp=2, pad_zero=True),
        I("ETHUSDT", "ETH/USDT:USDT", "linear", "0.01", "0.001", _PX["ETH"], pad_zero=True),
        I("SOLUSDT", "SOL/USDT:USDT", "linear", "0.0100", "1", _PX["SOL"], pad_zero=True),
    ],
    "okx": [
        I("BTC-USDT", "BTC/USDT", "spot", "0.1", "0.00000001", _PX["BTC"], strip=True),
        I("ETH-USDT", "ETH/USDT", "spot", "0.01", "0.000001", _PX["ETH"], strip=True),
        I("SOL-USDT", "SOL/USDT", "spot", "0.01", "0.000001", _PX["SOL"], strip=True),
        I("BTC-USDT-SWAP", "BTC/USDT:USDT", "linear", "0.1", "0.01", _PX["BTC"], ct_val="0.01", strip=True),
        I("ETH-USDT-SWAP", "ETH/USDT:USDT", "linear", "0.01", "0.01", _PX["ETH"], ct_val="0.1", strip=True),
        I("SOL-USDT-SWAP", "SOL/USDT:USDT", "linear", "0.01", "0.01", _PX["SOL"], ct_val="1", strip=True),
        I("BTC-USD-SWAP", "BTC/USD:BTC", "inverse", "0.1", "1", _PX["BTC"], ct_val="100", strip=True),
    ],
    "bybit": [
        I("BTCUSDT", "BTC/USDT", "spot", "0.01", "0.000001", _PX["BTC"]),
        I("ETHUSDT", "ETH/USDT", "spot", "0.01", "0.00001", _PX["ETH"]),
        I("SOLUSDT", "SOL/USDT", "spot", "0.01", "0.001", _PX["SOL"]),
        I("BTCUSDT", "BTC/USDT:USDT", "linear", "0.10", "0.001", _PX["BTC"]),
        I("ETHUSDT", "ETH/USDT:USDT", "linear", "0.01", "0.01", _PX["ETH"]),
        I("SOLUSDT", "SOL/USDT:USDT", "linear", "0.010", "0.1", _PX["SOL"]),
        # inverse sizes are whole contracts of 1 USD (BY-DOC: the inverse openInterest, kline volume and ticker
        # bid1Size/ask1Size are in USD, e.g. BTCUSD ask1Size "9854"), qtyStep 1
        I("BTCUSD", "BTC/USD:BTC", "inverse", "0.50", "1", _PX["BTC"], ct_val="1"),
    ],
    "bitget": [
        I("BTCUSDT", "BTC/USDT", "spot", "0.01", "0.000001", _PX["BTC"]),
        I("ETHUSDT", "ETH/USDT", "spot", "0.01", "0.0001", _PX["ETH"]),
        I("SOLUSDT", "SOL/USDT", "spot", "0.001", "0.001", _PX["SOL"]),
        I("BTCUSDT", "BTC/USDT:USDT", "linear", "0.1", "0.001", _PX["BTC"]),
        I("ETHUSDT", "ETH/USDT:USDT", "linear", "0.01", "0.01", _PX["ETH"]),
        I("SOLUSDT", "SOL/USDT:USDT", "linear", "0.001", "0.1", _PX["SOL"]),
        I("BTCUSD", "BTC/USD:BTC", "inverse", "0.1", "0.001", _PX["BTC"]),
    ],
}

MARKETS = tuple(DEFAULTS)


def select(market: str, symbols: list[str] | None) -> list[I]:
    """Instruments of ``market`` matching unified ("BTC/USDT:USDT"), pair ("BTC/USDT") or native ids."""
    insts = DEFAULTS[market]
    if not symbols:
        return list(insts)
    want = set(symbols)
    return [i for i in insts if i.native in want or i.unified in want or i.unified.split(":")[0] in want]


# A whole market's size per kind (synthetic instruments added by SimConfig.whole_market), near the real venues'
# trading lists: Binance spot over 1,500 pairs and about 400 USDⓈ-M perpetuals; OKX, Bybit and Bitget just over
# 1,000 instruments each (mostly spot, then USDT-margined, a few inverse).
WHOLE_MARKET: dict[str, dict[str, int]] = {
    "binance-spot": {"spot": 1550},
    "binance-usdm": {"linear": 420},
    "okx": {"spot": 700, "linear": 280, "inverse": 30},
    "bybit": {"spot": 620, "linear": 370, "inverse": 20},
    "bitget": {"spot": 650, "linear": 340, "inverse": 20},
}


def whole_market(market: str, n: int | dict[str, int]) -> list[I]:
    """Synthetic instruments of `market` (bases Z0000, Z0001, ...), cloned from its BTC instruments (same ticks,
    lots, prices and wire format), for scale tests: `n` per kind, or `n[kind]` of each kind (WHOLE_MARKET[market]
    is a whole market's size)."""
    return [replace(t, native=t.native.replace("BTC", f"Z{k:04d}"), unified=t.unified.replace("BTC", f"Z{k:04d}"))
            for t in DEFAULTS[market] if t.base == "BTC"
            for k in range(n if isinstance(n, int) else n.get(t.kind, 0))]


# Book frames per second per symbol in the real recordings (tests/data): Binance spot 2021-10-12, 30 s, @depth@100ms
# (NKNUSDT 5.0, LRCBTC 0.50, BLZETH 0.33, RUNEEUR 0.067) and OKX 2022-05-13, 10.8 s, books (BTC-USDT 9.0,
# BTC-USD-220527 9.1, UNI-USD-SWAP 8.6). Binance markets take Binance's; OKX, Bybit and Bitget take OKX's (no
# recording of theirs).
RECORDED_RATES: dict[str, tuple[float, ...]] = {"binance": (5.0, 0.5, 0.33, 0.067), "okx": (9.0, 9.1, 8.6)}


def recorded_rate(market: str, index: int) -> float:
    """The recorded book rate the `index`-th instrument of `market` ticks at (SimConfig.recorded_rates)."""
    rates = RECORDED_RATES["binance" if market.startswith("binance") else "okx"]
    return rates[index % len(rates)]
