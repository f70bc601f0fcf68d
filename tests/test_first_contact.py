"""What a new user meets first: --version, py.typed, the namespace (flag, MDENGINE_NAMESPACE, empty is an
error, status lists the running ones), depth checks, case-blind unified symbols, quiet logs, sane ages."""

import importlib.resources
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import mdengine
from mdengine import BookBuffer, Client
from mdengine.engine import cli
from mdengine.store import SegmentWriter, create_segment
from mdengine.store import layout as L

ENV = "MDENGINE_NAMESPACE"


def run_cli(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def published(namespace, monkeypatch):
    """An okx segment with a live BTC/USDT book (5 levels) and ETH/USDT:USDT, written by this process."""
    monkeypatch.delenv(ENV, raising=False)
    w = SegmentWriter(namespace, "okx", create=True, max_symbols=4, book_capacity=10, trade_capacity=64)
    btc = w.add_symbol("SPOT", "BTC-USDT", "BTC/USDT")
    eth = w.add_symbol("SWAP", "ETH-USDT-SWAP", "ETH/USDT:USDT", kind=L.MarketKind.LINEAR)
    w.publish_book(btc, [(100.5 - i, 1.0) for i in range(5)], [(101.25 + i, 2.0) for i in range(5)], update_id=7,
                   recv_ts_ns=time.time_ns())
    w.publish_book(eth, [(2000.0, 3.0)], [(2001.0, 4.0)], update_id=9, recv_ts_ns=time.time_ns())
    w.set_running()
    w.heartbeat()
    yield w
    w.close()


# ----------------------------------------------------------------------------- version, typing
def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mdengine {mdengine.__version__}"
    out = subprocess.run([sys.executable, "-m", "mdengine", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"mdengine {mdengine.__version__}"


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert importlib.resources.files("mdengine").joinpath("py.typed").is_file()
    import configparser

    setup = configparser.ConfigParser()
    setup.read(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"))
    assert "py.typed" in setup["options.package_data"]["mdengine"]
    assert setup["metadata"]["name"] == "mdengine-shm"  # "mdengine" on PyPI is another project


# ----------------------------------------------------------------------------- namespace
def test_client_attaches_to_the_namespace_in_MDENGINE_NAMESPACE(published, namespace, monkeypatch):
    monkeypatch.setenv(ENV, namespace)
    with Client() as c:
        assert c.namespace == namespace and c.top("okx", "BTC/USDT").bid == 100.5
    with Client(namespace) as c:  # an explicit namespace wins
        assert c.namespace == namespace


@pytest.mark.parametrize("given, env, message", [
    ("", None, "namespace is empty"),
    (None, "", "MDENGINE_NAMESPACE is empty"),
    (None, "Bad-NS", "MDENGINE_NAMESPACE: expected 1-12 characters"),
    ("x" * 13, None, "namespace: expected 1-12 characters"),
])
def test_client_refuses_an_empty_or_malformed_namespace(given, env, message, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(ENV, env)
    with pytest.raises(ValueError, match=message):
        Client(given)


@pytest.mark.parametrize("argv", [["run", "--sim", "--seconds", "0", "--namespace", ""],
                                  ["status", "--namespace", ""], ["top", "--once", "--namespace", ""],
                                  ["clean", "--namespace", ""]])
def test_every_command_refuses_an_empty_namespace(argv, capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--namespace is empty" in err


def test_an_empty_MDENGINE_NAMESPACE_is_refused_by_the_commands(capsys, monkeypatch):
    monkeypatch.setenv(ENV, "")
    for argv in (["status"], ["run", "--sim", "--seconds", "0"], ["top", "--once"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and "MDENGINE_NAMESPACE is empty" in err, argv


def test_commands_take_their_namespace_from_MDENGINE_NAMESPACE(published, namespace, capsys, monkeypatch):
    monkeypatch.setenv(ENV, namespace)
    code, out, _ = run_cli(["status", "--json", "--interval", "0"], capsys)
    assert code == 0 and json.loads(out)["namespace"] == namespace
    code, out, _ = run_cli(["top", "--once", "--interval", "0.01"], capsys)
    assert code == 0 and f"namespace {namespace}" in out and "okx BTC/USDT" in out
    from mdengine.engine.cli import _engine_config, _parser

    assert _engine_config(_parser().parse_args(["run", "--sim"])).namespace == namespace
    assert _engine_config(_parser().parse_args(["run", "--sim", "--namespace", "other"])).namespace == "other"
    # clean follows it too: only that namespace's segments are considered
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    create_segment(namespace, "bybit", max_symbols=1, book_capacity=1, trade_capacity=2, owner_pid=dead.pid)
    code, out, _ = run_cli(["clean"], capsys)
    assert code == 0 and f"mde-{namespace}-bybit" in out and all(namespace in line for line in out.splitlines())


def test_replay_and_feed_take_their_namespace_from_MDENGINE_NAMESPACE(monkeypatch, capsys):
    from mdengine.feed.__main__ import main as feed_main
    from mdengine.recording.replay import replay_main

    monkeypatch.setenv(ENV, "")
    assert replay_main(["/nonexistent.jsonl"]) == 2
    assert "MDENGINE_NAMESPACE is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        feed_main(["--exchange", "okx"])
    assert exit_info.value.code == 2 and "MDENGINE_NAMESPACE is empty" in capsys.readouterr().err


def test_status_without_a_namespace_lists_the_running_namespaces(published, namespace, capsys, monkeypatch):
    left = "l" + namespace[1:]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    create_segment(left, "bitget", max_symbols=1, book_capacity=1, trade_capacity=2, owner_pid=dead.pid)
    try:
        code, out, _ = run_cli(["status"], capsys)
        assert code == 0
        [line] = [x for x in out.splitlines() if x.startswith(namespace)]
        assert line.split()[:3] == [namespace, "none", "okx"]
        [line] = [x for x in out.splitlines() if x.startswith(left)]
        assert "left over, writer gone: bitget" in line and "mdengine clean" in line
        assert "mdengine status --namespace NAME" in out
        code, out, _ = run_cli(["status", "--json"], capsys)
        found = {n["namespace"]: n for n in json.loads(out)["namespaces"]}
        assert found[namespace] == {"namespace": namespace, "supervisor_pid": None, "exchanges": ["okx"],
                                    "left_over": []}
        assert found[left]["exchanges"] == [] and found[left]["left_over"] == ["bitget"]
    finally:
        from mdengine.store import shm

        for name in shm.list_names(left):
            shm.unlink(name)


def test_status_without_a_namespace_finds_a_supervisor_by_its_control_socket(namespace, capsys, monkeypatch):
    from mdengine.engine.control import ControlServer

    monkeypatch.delenv(ENV, raising=False)
    server = ControlServer(namespace, lambda msg: {"ok": True, "namespace": namespace, "pid": 4242,
                                                  "feeds": []}).start()
    try:
        code, out, _ = run_cli(["status", "--json"], capsys)
    finally:
        server.close()
    found = {n["namespace"]: n for n in json.loads(out)["namespaces"]}
    assert code == 0 and found[namespace] == {"namespace": namespace, "supervisor_pid": 4242, "exchanges": [],
                                              "left_over": []}
    code, out, _ = run_cli(["status", "--json"], capsys)  # gone with its socket
    assert namespace not in {n["namespace"] for n in json.loads(out)["namespaces"]}


# ----------------------------------------------------------------------------- reads
@pytest.mark.parametrize("depth", [-1, 0, 2.5, "3", True, None])
def test_snapshot_and_book_buffer_reject_a_bad_depth(published, namespace, depth):
    with Client(namespace) as c:
        book = c.book("okx", "BTC/USDT")
        if depth is None:  # None means every level the segment holds
            assert len(book.snapshot(depth).bids) == 5
            return
        with pytest.raises(ValueError, match="depth must be a whole number of levels >= 1"):
            book.snapshot(depth)
        with pytest.raises(ValueError, match="depth must be a whole number of levels >= 1"):
            BookBuffer(depth)


def test_snapshot_takes_numpy_ints_and_caps_a_depth_above_the_capacity(published, namespace):
    with Client(namespace) as c:
        book = c.book("okx", "BTC/USDT")
        assert book.snapshot(np.int64(2)).bids.tolist() == [[100.5, 1.0], [99.5, 1.0]]
        assert len(book.snapshot(10**6).bids) == 5  # capacity 10, five levels published
        buf = book.read_into(BookBuffer(3))
        assert buf.n_bids == 3 and buf.levels[0].tolist() == [100.5, 1.0, 101.25, 2.0]


def test_unified_symbols_are_case_insensitive(published, namespace):
    with Client(namespace) as c:
        assert c.top("okx", "btc/usdt").bid == c.top("okx", "BTC/USDT").bid == 100.5
        assert c.book("okx", "eth/usdt:usdt").symbol == "ETH/USDT:USDT"
        assert c.top("okx", "Eth/Usdt:Usdt").ask == 2001.0
        assert c.top("okx", "btc-usdt").bid == 100.5  # native ids: OKX's are case-blind, as before
        assert c.snapshot("okx", "btc/usdt", 1).bids.tolist() == [[100.5, 1.0]]


def test_the_rest_fallback_names_a_lower_case_unified_symbol_like_the_exchange(published, namespace):
    with Client(namespace, rest_fallback=True, endpoints={"binance-spot": "http://127.0.0.1:9"}) as c:
        book = c.book("binance", "eth/usdt")  # no binance segment: a REST handle
        assert book.rest_symbol().native == "ETHUSDT"


def test_instrument_index_resolves_lower_case_unified_symbols():
    from mdengine.symbols import Instrument, InstrumentIndex

    index = InstrumentIndex([
        Instrument("okx", "SPOT", "BTC-USDT", "BTC/USDT", L.MarketKind.SPOT, "BTC", "USDT"),
        Instrument("okx", "SWAP", "BTC-USDT-SWAP", "BTC/USDT:USDT", L.MarketKind.LINEAR, "BTC", "USDT", "USDT")])
    assert index.resolve("btc/usdt").native == "BTC-USDT"
    assert index.resolve("btc/usdt:usdt").native == "BTC-USDT-SWAP"


# ----------------------------------------------------------------------------- logs and ages
@pytest.fixture
def restore_logging():
    root, chatty = logging.getLogger(), logging.getLogger("websockets")
    handlers, level, chatty_level = root.handlers[:], root.level, chatty.level
    chatty.setLevel(logging.NOTSET)  # whatever an earlier test set: the filter alone must keep it out
    yield
    chatty.setLevel(chatty_level)
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_library_info_chatter_stays_out_of_the_log_unless_debug(level, tmp_path, restore_logging):
    from mdengine.engine.supervisor import configure_logging

    path = tmp_path / "engine.log"
    configure_logging(level, str(path))
    logging.getLogger("websockets.server").info("connection open")
    logging.getLogger("websockets.server").warning("server is shutting down")
    logging.getLogger("mdengine.supervisor").info("namespace=x supervisor started")
    logging.getLogger("mdengine.sim").info("replay okx /ws: end of the recording")
    for h in logging.getLogger().handlers:
        h.flush()
    text = path.read_text()
    assert "server is shutting down" in text and "supervisor started" in text and "end of the recording" in text
    assert ("connection open" in text) == (level == "DEBUG")


def test_replay_says_when_a_recorded_connection_has_played_to_its_end(recordings_dir, caplog):
    from mdengine.sim import Simulator
    from mdengine.sim.testing import WsClient

    path = os.path.join(recordings_dir, "okx-2022-05-13.jsonl")
    with caplog.at_level(logging.INFO, logger="mdengine.sim"), Simulator(replay=path, speed=0) as sim:
        with WsClient(sim.url("okx") + "/ws/v5/public") as c:
            frames = c.drain(0.5)
        deadline = time.monotonic() + 30
        while not any("end of the recording" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no end-of-recording line"
            time.sleep(0.02)
    [record] = [r for r in caplog.records if "end of the recording" in r.getMessage()]
    assert record.name == "mdengine.sim" and record.levelno == logging.INFO
    assert f"okx /ws/v5/public: end of the recording ({len(frames)} frames" in record.getMessage()


def test_status_ages_never_go_below_zero(published, namespace, monkeypatch):
    """A book or heartbeat stamped after the sampler read its clock (or by a clock ahead) is 0 s old."""
    from mdengine.engine.status import StatusSampler

    ahead = time.time_ns() + 5 * 10**9
    published.heartbeat(ahead)
    real_time_ns = time.time_ns
    with monkeypatch.context() as m:
        m.setattr(time, "time_ns", lambda: real_time_ns() + 5 * 10**9)
        published.publish_book(0, [(100.0, 1.0)], [(101.0, 1.0)], update_id=8, recv_ts_ns=ahead)
    with StatusSampler(namespace) as sampler:
        [feed] = sampler.sample()["feeds"]
    assert feed["heartbeat_age_s"] == 0.0
    btc = next(s for s in feed["symbols"] if s["symbol"] == "BTC/USDT")
    assert btc["age_s"] == 0.0 and str(btc["age_s"]) == "0.0"
