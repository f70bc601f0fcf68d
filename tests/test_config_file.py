"""engine.toml parsing: every key maps onto EngineConfig, every bad value names its key."""

import os
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdengine.engine.config import DEFAULT_NAMESPACE, EXCHANGES, EngineConfig, ExchangeConfig, RestartPolicy
from mdengine.engine.configfile import (
    DEFAULT_SYMBOLS,
    ConfigError,
    default_config,
    exchange_config,
    load_config,
    parse_config,
)

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "engine.example.toml")


def test_example_config_loads():
    cfg = load_config(EXAMPLE)
    assert [e.name for e in cfg.exchanges] == list(EXCHANGES)
    assert cfg.exchanges[0].markets == ["spot", "usdm"]
    assert cfg.exchanges[1].book_depth == 25 and cfg.exchanges[0].book_depth == 50
    assert cfg.restart == RestartPolicy()


def test_every_key_reaches_the_dataclasses():
    cfg = parse_config(tomllib.loads("""
namespace = "ns_1"
log_level = "debug"
keep_segments = true
record_dir = "/tmp/rec"
[restart]
backoff_initial_s = 0.1
backoff_max_s = 1
stall_after_s = 2
max_restarts = 3
window_s = 60
[defaults]
trades = false
endpoints = { ws = "ws://a" }
[[exchanges]]
name = "okx"
symbols = ["BTC/USDT"]
markets = ["SPOT"]
book_depth = 400
book_mode = "partial"
endpoints = { rest = "http://b" }
max_symbols = 4
trade_capacity = 1024
stale_after_s = 1.5
heartbeat_interval_s = 0.2
silence_timeout_s = 9
busy_poll_s = 0.25
sched_slice_us = 250
warm_interval_ms = 2.5
options = { x = 1 }
"""))
    assert cfg.namespace == "ns_1" and cfg.log_level == "DEBUG" and cfg.keep_segments
    assert cfg.restart == RestartPolicy(0.1, 1.0, 2.0, 3, 60.0)
    assert cfg.exchanges == [ExchangeConfig(
        name="okx", symbols=["BTC/USDT"], markets=["SPOT"], book_depth=400, book_mode="partial", trades=False,
        endpoints={"ws": "ws://a", "rest": "http://b"}, max_symbols=4, book_capacity=400, trade_capacity=1024,
        stale_after_s=1.5, heartbeat_interval_s=0.2, silence_timeout_s=9.0, record_dir="/tmp/rec",
        busy_poll_s=0.25, sched_slice_us=250.0, warm_interval_ms=2.5, options={"x": 1})]


def test_empty_config_is_the_default_engine():
    assert parse_config({}) == EngineConfig()


@pytest.mark.parametrize("toml, message", [
    ('[[exchanges]]\nname="okx"\n[[exchanges]]\nname="bybit"\nbook_depth="x"',
     'exchanges[1].book_depth: expected an integer 1..5000, got "x"'),
    ('[[exchanges]]\nname="okx"\nbook_depth=0', "exchanges[0].book_depth: expected an integer 1..5000, got 0"),
    ('[[exchanges]]\nname="okx"\nbook_depth=true', "exchanges[0].book_depth: expected an integer"),
    ('[[exchanges]]\nname="kraken"', 'exchanges[0].name: expected one of binance, okx, bybit, bitget, got "kraken"'),
    ("[[exchanges]]\nsymbols=[]", "exchanges[0].name: missing"),
    ('[[exchanges]]\nname="okx"\nsymbls=[]', "exchanges[0].symbls: unknown key (did you mean 'symbols'?)"),
    ('[[exchanges]]\nname="okx"\nsymbols=["A", 3]', "exchanges[0].symbols[1]: expected a non-empty string, got 3"),
    ('[[exchanges]]\nname="okx"\nbook_mode="full"', 'exchanges[0].book_mode: expected one of diff, partial'),
    ('[[exchanges]]\nname="okx"\ntrade_capacity=1000', "exchanges[0].trade_capacity: expected a power of two"),
    ('[[exchanges]]\nname="okx"\nbook_depth=60\nbook_capacity=50', "exchanges[0].book_depth: book_depth 60 exceeds"),
    ('[[exchanges]]\nname="okx"\nmax_symbols=1\nsymbols=["A","B"]', "exchanges[0].symbols: 2 symbols exceed"),
    ('[[exchanges]]\nname="okx"\nendpoints={ws=1}', "exchanges[0].endpoints.ws: expected a non-empty string"),
    ('[[exchanges]]\nname="okx"\n[[exchanges]]\nname="okx"', "exchanges[1].name: 'okx' is configured twice"),
    ('namespace="Bad-Name"', 'namespace: expected 1-12 characters of a-z, 0-9 or _, got "Bad-Name"'),
    ("namespace=3", "namespace: expected 1-12 characters"),
    ('log_level="LOUD"', "log_level: expected one of DEBUG"),
    ("keep_segments=1", "keep_segments: expected true or false, got 1"),
    ("[restart]\nstall_after_s=0", "restart.stall_after_s: expected a positive number of seconds, got 0"),
    ("[restart]\nmax_restart=3", "restart.max_restart: unknown key (did you mean 'max_restarts'?)"),
    ("[restart]\nbackoff_initial_s=5\nbackoff_max_s=1", "restart.backoff_max_s: 1.0 is below"),
    ("[defaults]\nbook_depth=-1", "defaults.book_depth: expected an integer 1..5000, got -1"),
    ("[defaults]\nname='okx'", "defaults.name: unknown key"),
    ("exchanges = 3", "exchanges: expected an array of tables"),
    ("exchanges = [3]", "exchanges[0]: expected a table, got 3"),
    ("namespce='x'", "namespce: unknown key (did you mean 'namespace'?)"),
    ("[defaults]\nsched_slice_us=50", "defaults.sched_slice_us: 50.0 us; Linux takes slices of 100 to 100000 us"),
    ("[defaults]\nsched_slice_us=-1", "defaults.sched_slice_us: expected"),
    ("[defaults]\nwarm_interval_ms=0.01", "defaults.warm_interval_ms: 0.01 ms; a warm-up interval is 0.1 to 1000"),
    ("[defaults]\nwarm_interval_ms=-1", "defaults.warm_interval_ms: expected"),
])
def test_bad_config_names_the_key(toml, message):
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(toml))
    assert str(info.value).startswith(message), str(info.value)


def test_load_config_prefixes_the_file_and_reports_syntax_and_missing_files(tmp_path):
    bad = tmp_path / "e.toml"
    bad.write_text('[[exchanges]]\nname="okx"\nbook_depth="x"\n')
    with pytest.raises(ConfigError, match=r"e\.toml: exchanges\[0\]\.book_depth"):
        load_config(str(bad))
    bad.write_text("namespace = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"))


def test_default_config_subscribes_btc_and_eth_spot_and_perps_everywhere():
    cfg = default_config()
    assert cfg.namespace == DEFAULT_NAMESPACE
    assert [e.name for e in cfg.exchanges] == list(EXCHANGES)
    assert all(e.symbols == list(DEFAULT_SYMBOLS) for e in cfg.exchanges)
    assert set(DEFAULT_SYMBOLS) == {"BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"}


def test_exchange_config_adds_an_unconfigured_exchange_from_the_first_ones_settings():
    cfg = parse_config(tomllib.loads('[[exchanges]]\nname="okx"\nbook_depth=10\nsymbols=["BTC/USDT"]'))
    ex = exchange_config(cfg, "bybit")
    assert ex.name == "bybit" and ex.symbols == [] and ex.book_depth == 10
    assert exchange_config(cfg, "bybit") is ex and len(cfg.exchanges) == 2
    with pytest.raises(ConfigError, match="unknown exchange"):
        exchange_config(cfg, "kraken")


_scalar = st.one_of(st.sampled_from(EXCHANGES), st.integers(-10, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=5), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))
_keys = st.sampled_from(["name", "symbols", "markets", "book_depth", "book_mode", "trades", "endpoints",
                         "max_symbols", "book_capacity", "trade_capacity", "stale_after_s", "silence_timeout_s",
                         "record_dir", "busy_poll_s", "sched_slice_us", "warm_interval_ms", "options",
                         "bogus"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(_keys, _scalar, max_size=6), max_size=3),
       st.dictionaries(st.sampled_from(["namespace", "log_level", "keep_segments", "record_dir"]), _scalar))
def test_arbitrary_documents_give_a_config_or_a_ConfigError(exchanges, top):
    """The fuzz invariant: any document yields an EngineConfig or a ConfigError naming a key, nothing else."""
    try:
        cfg = parse_config({**top, "exchanges": exchanges})
    except ConfigError as exc:
        assert ":" in str(exc)
        return
    for ex in cfg.exchanges:
        assert ex.name in EXCHANGES and 1 <= ex.book_depth <= ex.book_capacity


def test_misspelt_endpoint_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"exchanges\[0\]\.endpoints\.ws_spot: binance has no endpoint 'ws_spot'"):
        parse_config({"exchanges": [{"name": "binance", "endpoints": {"ws_spot": "ws://127.0.0.1:1"}}]})
    cfg = parse_config({"exchanges": [{"name": "binance", "endpoints": {"spot_ws": "ws://127.0.0.1:1"}}]})
    assert cfg.exchanges[0].endpoints == {"spot_ws": "ws://127.0.0.1:1"}


def test_control_allow_lists_take_names_and_ids_and_refuse_unknown_names():
    cfg = parse_config(tomllib.loads('[control]\nallow_users = ["nobody", 1001]\nallow_groups = ["root", 7]'))
    assert cfg.control_uids == [65534, 1001] and cfg.control_gids == [0, 7]
    with pytest.raises(ConfigError, match=r"control.allow_users\[0\]: no user named 'no-such-user-x'"):
        parse_config(tomllib.loads('[control]\nallow_users = ["no-such-user-x"]'))
    with pytest.raises(ConfigError, match=r"control.allow_groups\[0\]: expected a group name or id, got -1"):
        parse_config(tomllib.loads("[control]\nallow_groups = [-1]"))
    with pytest.raises(ConfigError, match="control.allow_user: unknown key"):
        parse_config(tomllib.loads("[control]\nallow_user = []"))


def test_control_max_wait_is_a_positive_number_of_seconds():
    assert parse_config({}).control_max_wait_s == 60.0
    assert parse_config(tomllib.loads("[control]\nmax_wait_s = 5")).control_max_wait_s == 5.0
    for bad in ("0", "-1", "inf", "nan", "true"):
        with pytest.raises(ConfigError, match="control.max_wait_s: expected a positive number of seconds"):
            parse_config(tomllib.loads(f"[control]\nmax_wait_s = {bad}"))


def test_max_message_bytes_is_an_exchange_key_with_sane_bounds():
    cfg = parse_config(tomllib.loads('[defaults]\nmax_message_bytes = 1048576\n[[exchanges]]\nname = "okx"'))
    assert cfg.exchanges[0].max_message_bytes == 1 << 20
    with pytest.raises(ConfigError, match=r"exchanges\[0\].max_message_bytes: expected an integer 1024"):
        parse_config(tomllib.loads('[[exchanges]]\nname = "okx"\nmax_message_bytes = 10'))
