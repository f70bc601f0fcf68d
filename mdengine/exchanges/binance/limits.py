"""Binance's REST limits: request weight per IP and minute, and what each public endpoint weighs.

Spot (rest-api.md): REQUEST_WEIGHT 6000 per minute; depth weighs 5 (limit 1-100), 25 (101-500), 50 (501-1000),
250 (1001-5000), default limit 100; exchangeInfo 20; trades 25. USDⓈ-M (Order-Book page): 2400 per minute; depth
weighs 2 (limit 5-50), 5 (100), 10 (500), 20 (1000), default limit 500; exchangeInfo 1; trades 5.
Repeated 429s get the IP banned (418, 2 minutes up to 3 days), with Retry-After on both.
"""

from __future__ import annotations

from collections.abc import Mapping

# budget key -> (weight allowed, per this many seconds)
BUDGETS: dict[str, tuple[float, float]] = {"binance-spot": (6000.0, 60.0), "binance-usdm": (2400.0, 60.0),
                                           "binance-connect": (300.0, 300.0)}  # WebSocket connections per IP
# the heaviest single request cost() can return per budget (a bucket must hold it whole); 1 where absent
MAX_WEIGHT: dict[str, float] = {"binance-spot": 250.0, "binance-usdm": 20.0}


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
        weight = {"depth": usdm_depth_weight(_limit(params, 500)), "exchangeInfo": 1.0, "trades": 5.0}.get(name, 1.0)
        return "binance-usdm", weight
    return None


USDM_DEPTHS = (5, 10, 20, 50, 100, 500, 1000)  # the only limits fapi/v1/depth takes
STORM_PENDING = 20  # more snapshots than this outstanding at once: a start-up or resync storm
STORM_MIN_LEVELS = 100  # a storm's snapshots still hold this many levels (or the published depth, if more)


def snapshot_limit(market: str, configured: int, book_depth: int, pending: int) -> int:
    """The depth (`limit`) of the next snapshot: `configured`, except in a storm (more than STORM_PENDING snapshots
    outstanding), where it is the cheapest valid limit holding max(STORM_MIN_LEVELS, book_depth) levels, if that is
    lighter: a 1,000-level USDⓈ-M snapshot weighs 20 and a 100-level one 5 (spot: 50 and 5), so a storm of
    hundreds fits the budget several times sooner, and the books it publishes are as deep."""
    if pending <= STORM_PENDING:
        return configured
    want = max(STORM_MIN_LEVELS, book_depth)
    if market == "usdm":
        cheap = next((d for d in USDM_DEPTHS if d >= want), USDM_DEPTHS[-1])
        return cheap if usdm_depth_weight(cheap) < usdm_depth_weight(configured) else configured
    cheap = min(want, 5000)
    return cheap if spot_depth_weight(cheap) < spot_depth_weight(configured) else configured
