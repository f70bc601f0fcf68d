"""Binance's REST limits: request weight per IP and minute, what each public endpoint weighs, the header that
reports the IP's use, and the depth of a snapshot in a storm.

Spot, binance/binance-spot-api-docs (BN-SPOT, HEAD a5e0bc3d, 2026-07-21): REQUEST_WEIGHT 6,000 per minute
(enums.md; CHANGELOG 2023-08-25); rest-api.md "Order book": depth weighs 5 (limit 1-100), 25 (101-500),
50 (501-1000), 250 (1001-5000), default limit 100; "Exchange information" 20; "Recent trades list" 25.
USDⓈ-M, developers.binance.com/docs/derivatives/usds-margined-futures (BN-UM): REQUEST_WEIGHT 2,400 per minute
(market-data/rest-api/Exchange-Information, rateLimits); market-data/rest-api/Order-Book: depth weighs 2 (limit 5,
10, 20, 50), 5 (100), 10 (500), 20 (1000), default limit 500; exchangeInfo 1; trades 5; openInterest 1.
Both (rest-api.md "IP Limits"): every answer carries X-MBX-USED-WEIGHT-1M, the weight the IP used in the current
minute (minutes start on the minute, websocket-api/rate-limits); repeated 429s get the IP banned (418, 2 minutes up
to 3 days), with Retry-After on both. WebSocket streams: 300 connection attempts per 5 minutes per IP.
"""

from __future__ import annotations

from collections.abc import Mapping

# budget key -> (weight allowed, per this many seconds)
BUDGETS: dict[str, tuple[float, float]] = {"binance-spot": (6000.0, 60.0), "binance-usdm": (2400.0, 60.0),
                                           "binance-connect": (300.0, 300.0)}  # WebSocket connections per IP
# the heaviest single request cost() can return per budget (a bucket must hold it whole); 1 where absent
MAX_WEIGHT: dict[str, float] = {"binance-spot": 250.0, "binance-usdm": 20.0}
USED_WEIGHT_HEADER = "x-mbx-used-weight-1m"  # (lower case: HTTP header names are case-insensitive)


def _limit(params: Mapping[str, str], default: int) -> int:
    try:
        return int(params.get("limit", default))
    except ValueError:
        return default


def spot_depth_weight(limit: int) -> float:
    return 5.0 if limit <= 100 else 25.0 if limit <= 500 else 50.0 if limit <= 1000 else 250.0


def usdm_depth_weight(limit: int) -> float:
    return 2.0 if limit <= 50 else 5.0 if limit <= 100 else 10.0 if limit <= 500 else 20.0


def cost(path: str, params: Mapping[str, str]) -> tuple[str, float] | None:
    """(budget key, weight) of a GET of `path` with query `params`; None if the path is not Binance's."""
    if path.startswith("/api/v3/"):
        name = path[len("/api/v3/"):]
        weight = {"depth": spot_depth_weight(_limit(params, 100)), "exchangeInfo": 20.0, "trades": 25.0}.get(name, 2.0)
        return "binance-spot", weight
    if path.startswith("/fapi/v1/"):
        name = path[len("/fapi/v1/"):]
        weight = {"depth": usdm_depth_weight(_limit(params, 500)), "exchangeInfo": 1.0, "trades": 5.0,
                  "openInterest": 1.0}.get(name, 1.0)
        return "binance-usdm", weight
    return None


def server_usage(key: str, headers: Mapping[str, str], now_s: float, window_s: float) -> tuple[float, float] | None:
    """(weight the IP used in Binance's current window, wall-clock second that window ends) from an answer's
    headers, or None when they do not say. Binance's windows start on the minute (on multiples of `window_s`, the
    budget's window: a test's simulator shortens them alike)."""
    if key not in ("binance-spot", "binance-usdm"):
        return None
    for name, value in headers.items():
        if name.lower() == USED_WEIGHT_HEADER:
            try:
                used = float(value)
            except ValueError:
                return None
            if not used >= 0.0:  # NaN, negative: not a figure
                return None
            return used, (now_s // window_s + 1.0) * window_s
    return None


SPOT_DEPTHS = (100, 500, 1000, 5000)  # the deepest limit of each spot weight step (any limit 1-5000 is valid)
USDM_DEPTHS = (5, 10, 20, 50, 100, 500, 1000)  # the only limits fapi/v1/depth takes
STORM_SHARE = 0.2  # of a market's limit per window that one storm's snapshots may take: no more than the box's budget
#                    grants at once (restbudget: SAFETY 90 % x BURST_SHARE 25 % = 22.5 % of the limit; a test guards
#                    it), so a start-up storm's books go live without waiting for the bucket to refill; a lone
#                    resync later takes the configured depth


def storm_weight(market: str) -> float:
    """The weight per window a storm of `market` snapshots may take by default (STORM_SHARE of its limit)."""
    return STORM_SHARE * BUDGETS["binance-usdm" if market == "usdm" else "binance-spot"][0]


def snapshot_limit(market: str, configured: int, book_depth: int, storm: int, window_weight: float | None = None
                   ) -> int:
    """The depth (`limit`) of the next snapshot when `storm` snapshots of `market` (this one included) are due.

    The deepest valid limit, from the lightest that holds `book_depth` levels (what the book publishes) up to
    `configured`, whose weight taken `storm` times fits `window_weight` (default storm_weight(market)): the storm
    then fits one window of the budget. When none fits, the lightest (the storm then spreads over several windows,
    paced by the budget). A single resync (storm 1) gets `configured`."""
    weight = usdm_depth_weight if market == "usdm" else spot_depth_weight
    allowance = storm_weight(market) if window_weight is None else window_weight
    if market == "usdm":
        floor = next((d for d in USDM_DEPTHS if d >= book_depth), USDM_DEPTHS[-1])
        ceiling = max(floor, max((d for d in USDM_DEPTHS if d <= configured), default=USDM_DEPTHS[0]))
        candidates = [d for d in USDM_DEPTHS if floor <= d <= ceiling]
    else:
        floor = min(max(book_depth, 1), 5000)
        ceiling = max(floor, min(configured, 5000))
        candidates = sorted({d for d in SPOT_DEPTHS if floor <= d <= ceiling} | {ceiling})
    fitting = [d for d in candidates if max(storm, 1) * weight(d) <= allowance]
    if fitting:
        return fitting[-1]
    lightest = min(weight(d) for d in candidates)
    return max(d for d in candidates if weight(d) == lightest)


# Push cadence of the perp data (layout 1.6 per-group freshness): `<symbol>@markPrice@1s` carries mark, index and
# funding every second (BN-UM websocket-market-streams/Mark-Price-Stream: "Update Speed: 3000ms or 1000ms"); open
# interest is polled by the feed (REST /fapi/v1/openInterest), so its cadence is the adapter's open_interest_interval_s,
# stretched by OPEN_INTEREST_WEIGHT_PER_MIN (the adapter computes it).
PERP_PUSH_EVERY_S: dict[str, float] = {"mark": 1.0, "index": 1.0, "funding": 1.0}
