"""Binance's default endpoints, its REST markets, and which market a URL belongs to."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

SPOT, USDM = "spot", "usdm"  # the adapter's market names

DEFAULT_ENDPOINTS: dict[str, str] = {
    "spot_ws": "wss://stream.binance.com:9443",
    "spot_rest": "https://api.binance.com",
    "usdm_ws": "wss://fstream.binance.com",
    "usdm_rest": "https://fapi.binance.com",
}
# REST market (the simulator's market names, the keys a feed publishes its REST bases under) -> adapter market
REST_MARKETS: dict[str, str] = {"binance-spot": SPOT, "binance-usdm": USDM}
# REST market -> (WebSocket base, REST base) of the real exchange, the shape of a simulator's endpoints()
MARKET_URLS: dict[str, tuple[str, str]] = {rm: (DEFAULT_ENDPOINTS[m + "_ws"], DEFAULT_ENDPOINTS[m + "_rest"])
                                           for rm, m in REST_MARKETS.items()}
DEFAULT_REST: dict[str, str] = {rm: rest for rm, (_, rest) in MARKET_URLS.items()}


def market_of_url(url: str, usdm_hosts: Iterable[str] = ()) -> str:
    """SPOT or USDM: the market a Binance WebSocket or REST URL serves.

    USDⓈ-M is told by its hosts (``fstream``/``fapi``, or any of `usdm_hosts`: hosts a recording reached with
    ``/fapi/`` paths, e.g. a simulator's) or by its paths (``/fapi/`` REST, ``/public/`` and ``/market/`` streams).
    """
    parts = urlsplit(url)
    usdm = (parts.netloc in set(usdm_hosts) or "fstream" in parts.netloc or "fapi" in parts.netloc
            or parts.path.startswith(("/public/", "/market/", "/fapi/")))
    return USDM if usdm else SPOT


def usdm_hosts(urls: Iterable[str]) -> set[str]:
    """The hosts among `urls` that served ``/fapi/`` REST paths: USDⓈ-M hosts whatever their names."""
    return {parts.netloc for parts in map(urlsplit, urls) if "/fapi/" in parts.path}


def rest_market_of_url(url: str, usdm_hosts: Iterable[str] = ()) -> str:
    """The REST market (``binance-spot`` or ``binance-usdm``) of a Binance URL (see `market_of_url`)."""
    market = market_of_url(url, usdm_hosts)
    return next(rm for rm, m in REST_MARKETS.items() if m == market)
