"""Recordings (JSON Lines: kind connect/send/recv/http, ts, url, data) indexed for serving.

Frames are grouped per WebSocket connection, keyed by the URL path (+ query); REST bodies by
path + query, whatever the host. Pure: ``server.py`` does the sending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from mdengine.exchanges import EXCHANGES, recording_rules


def _hosts() -> dict[str, str]:
    """recorded host -> simulated market, from each exchange's recording rules (the real hosts a replay uses)."""
    out: dict[str, str] = {}
    for name in EXCHANGES:
        rules = recording_rules(name)
        for market, hosts in rules.REPLAY_HOSTS.items():
            out.update(dict.fromkeys(hosts, market))
        out.update(rules.HOST_ALIASES)
    return out


_HOSTS = _hosts()


def market_of(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host not in _HOSTS:
        raise ValueError(f"recording URL {url!r}: no simulated market for host {host!r}")
    return _HOSTS[host]


def _norm_query(query: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(parse_qsl(query, keep_blank_values=True)))


@dataclass
class Stream:
    """One recorded WebSocket connection."""

    path: str
    query: tuple[tuple[str, str], ...]
    t0: float
    frames: list[tuple[float, str]] = field(default_factory=list)  # (seconds after connect, text)


@dataclass
class Recording:
    streams: dict[str, list[Stream]] = field(default_factory=dict)  # market -> connections in order
    http: dict[str, dict[tuple[str, tuple], list[str]]] = field(default_factory=dict)  # market -> bodies

    @classmethod
    def load(cls, path: str) -> Recording:
        rec = cls()
        current: dict[str, Stream] = {}  # url -> its latest connection
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                ev = json.loads(line)
                url, market = ev["url"], market_of(ev["url"])
                parts = urlsplit(url)
                if ev["kind"] == "connect":
                    s = Stream(parts.path or "/", _norm_query(parts.query), ev["ts"])
                    current[url] = s
                    rec.streams.setdefault(market, []).append(s)
                elif ev["kind"] == "recv":
                    s = current.get(url)
                    if s is None:  # a recording that starts mid-connection (or keeps no connects)
                        s = current[url] = Stream(parts.path or "/", _norm_query(parts.query), ev["ts"])
                        rec.streams.setdefault(market, []).append(s)
                    s.frames.append((ev["ts"] - s.t0, ev["data"]))
                elif ev["kind"] == "http":
                    key = (parts.path, _norm_query(parts.query))
                    rec.http.setdefault(market, {}).setdefault(key, []).append(ev["data"])
        return rec

    @property
    def markets(self) -> list[str]:
        return sorted(set(self.streams) | set(self.http))

    def stream_for(self, market: str, path: str, query: str) -> Stream | None:
        """Exact path+query match first, then the first recorded connection on that path."""
        cands = [s for s in self.streams.get(market, []) if s.path == path]
        q = _norm_query(query)
        return next((s for s in cands if s.query == q), cands[0] if cands else None)

    def http_body(self, market: str, path: str, query: str, nth: int = 0) -> str | None:
        bodies = self.http.get(market, {}).get((path, _norm_query(query)))
        if not bodies:
            return None
        return bodies[min(nth, len(bodies) - 1)]
