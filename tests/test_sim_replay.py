"""Replay serves both real recordings: WS frames by path, REST bodies by path+query."""

import json
import os

from mdengine.sim import Simulator
from mdengine.sim.market import checksum_string
from mdengine.sim.testing import WsClient, http_get


def test_replay_binance_recording_syncs(recordings_dir):
    path = os.path.join(recordings_dir, "binance-spot-2021-10-12.jsonl")
    with Simulator(replay=path, speed=0) as sim:
        assert list(sim.endpoints()) == ["binance-spot"]
        url = sim.url("binance-spot") + "/stream?streams=nknusdt@depth@100ms"  # query differs: path match
        with WsClient(url) as c:
            frames = c.drain(0.5)
        assert len(frames) == 265
        diffs = [f["data"] for f in frames if f["stream"].endswith("@depth@100ms")]
        applied = 0
        for sym in ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"):
            status, _, snap = http_get(sim.rest_url("binance-spot") + f"/api/v3/depth?limit=1000&symbol={sym}")
            assert status == 200
            last = snap["lastUpdateId"]
            evs = [d for d in diffs if d["s"] == sym and d["u"] > last]
            assert evs[0]["U"] <= last + 1 <= evs[0]["u"]
            for e in evs:
                assert e["U"] == last + 1
                last = e["u"]
                applied += 1
        assert applied == 172
        assert http_get(sim.rest_url("binance-spot") + "/api/v3/depth?symbol=XXX")[0] == 404


def test_replay_okx_recording_checksums(recordings_dir):
    path = os.path.join(recordings_dir, "okx-2022-05-13.jsonl")
    with Simulator(replay=path, speed=0) as sim, WsClient(sim.url("okx") + "/ws/v5/public") as c:
        c.send({"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]})
        frames = c.drain(0.5)
    assert len(frames) == 410
    books: dict[str, tuple[dict, dict]] = {}
    checked = 0
    for f in frames:
        if f.get("arg", {}).get("channel") != "books" or "data" not in f:
            continue
        inst, d = f["arg"]["instId"], f["data"][0]
        if f["action"] == "snapshot":
            books[inst] = ({}, {})
        for side, key in zip(books[inst], ("bids", "asks"), strict=True):
            for px, qty, *_ in d[key]:
                side.pop(px, None) if qty == "0" else side.__setitem__(px, qty)
        b, a = books[inst]
        bl = [[p, b[p]] for p in sorted(b, key=float, reverse=True)[:25]]
        al = [[p, a[p]] for p in sorted(a, key=float)[:25]]
        import zlib

        assert zlib.crc32(checksum_string(bl, al).encode()) == d["checksum"] & 0xFFFFFFFF
        checked += 1
    assert checked == 290


def test_replay_speed_factor_paces_frames(recordings_dir):
    path = os.path.join(recordings_dir, "okx-2022-05-13.jsonl")
    with open(path) as fh:
        evs = [json.loads(line) for line in fh if line.strip()]
    span = max(e["ts"] for e in evs if e["kind"] == "recv") - evs[0]["ts"]
    with Simulator(replay=path, speed=span / 0.6) as sim, WsClient(sim.url("okx") + "/ws/v5/public") as c:
        first = c.recv(2)
        assert first
        rest = c.drain(0.4)
        assert len(rest) == 409  # all frames within ~0.6 s, not the recording's real span
