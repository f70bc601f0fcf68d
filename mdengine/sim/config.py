"""Simulator timing and limit knobs. Defaults are the real exchanges' values; tests shrink them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimConfig:
    rate_hz: float = 20.0  # model steps per second per symbol; 0 = as fast as possible
    levels: int = 100  # price levels per side in each model book
    okx_checksum: str = "zero"  # "zero" (OKX since 2026-06-23) | "crc32" (legacy)
    binance_spot_ping_interval: float = 20.0  # server WS ping frames
    binance_spot_ping_timeout: float = 60.0
    binance_usdm_ping_interval: float = 180.0
    binance_usdm_ping_timeout: float = 600.0
    binance_spot_msg_rate: int = 5  # incoming messages per second before disconnect
    binance_usdm_msg_rate: int = 10
    binance_spot_max_streams: int = 1024
    binance_usdm_max_streams: int = 200
    okx_idle_timeout: float = 30.0  # close 4004 without subscription/data
    okx_keepalive: float = 60.0  # idle book: send prevSeqId == seqId update
    bybit_idle_timeout: float = 600.0  # no ping and no data
    bybit_l1_repeat: float = 3.0  # orderbook.1 re-sent when unchanged
    bybit_spot_max_args: int = 10
    bitget_idle_timeout: float = 120.0  # no "ping" received
    bitget_msg_rate: int = 10
    # REST limits per IP (mdengine.sim.ratelimit): 0 = none; else the documented limits times this (429, then 418)
    rest_limit_scale: float = 0.0
    rest_window_s: float = 0.0  # > 0: every REST limit's window, in seconds (0: the exchange's own)
    rest_ban_after: int = 3  # 429s within one window before the 418 ban
    rest_ban_s: float = 120.0
    extra_instruments: int = 0  # per kind of each market, synthetic instruments added (listings.whole_market)
    whole_market: bool = False  # each kind of each market at least at a real market's size (listings.WHOLE_MARKET)
    recorded_rates: bool = False  # each instrument ticks at a rate from the real recordings (listings.recorded_rate)
