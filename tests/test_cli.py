"""The mdengine CLI: bad configs stop before anything starts, status/top read real segments, clean, dispatch."""

import json
import os
import subprocess
import sys
import time

import pytest

from mdengine.engine import cli
from mdengine.engine.control import is_running
from mdengine.store import SegmentWriter, create_segment, list_names, shm
from mdengine.store import layout as L


def run_cli(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_config_names_the_key_and_exits_2_before_anything_starts(tmp_path, namespace, capsys):
    path = tmp_path / "engine.toml"
    path.write_text(f'namespace = "{namespace}"\n[[exchanges]]\nname = "okx"\n[[exchanges]]\nname = "bybit"\n'
                    'book_depth = "x"\n')
    code, out, err = run_cli(["run", "--config", str(path)], capsys)
    assert code == 2
    assert 'exchanges[1].book_depth: expected an integer 1..5000, got "x"' in err
    assert list_names(namespace) == [] and not is_running(namespace)


@pytest.mark.parametrize("argv, message", [
    (["run", "--namespace", "Bad-NS", "--sim"], "--namespace: expected 1-12 characters"),
    (["run", "--sim", "--log-level", "loud"], "--log-level: expected DEBUG"),
    (["run", "--config", "/nonexistent/engine.toml"], "cannot read"),
    (["status", "--namespace", "x" * 13], "--namespace: expected"),
])
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and message in err


def test_config_without_exchanges_and_without_sim_is_refused(tmp_path, namespace, capsys):
    path = tmp_path / "engine.toml"
    path.write_text(f'namespace = "{namespace}"\n')
    code, _, err = run_cli(["run", "--config", str(path)], capsys)
    assert code == 2 and "no [[exchanges]]" in err


@pytest.fixture
def published(namespace):
    """A segment with two symbols published by this process (the writer stays alive during the test)."""
    w = SegmentWriter(namespace, "okx", create=True, max_symbols=4, book_capacity=10, trade_capacity=64)
    btc = w.add_symbol("SPOT", "BTC-USDT", "BTC/USDT")
    eth = w.add_symbol("SWAP", "ETH-USDT-SWAP", "ETH/USDT:USDT", kind=L.MarketKind.LINEAR)
    w.publish_book(btc, [(100.5, 1.0)], [(101.25, 2.0)], update_id=7, recv_ts_ns=time.time_ns() - 50_000)
    w.publish_state(eth, L.BookState.SYNCING)
    for _ in range(3):
        w.stat(btc, "messages")
    w.stat(btc, "gaps", 2)
    w.count("messages", 3)
    w.count("reconnects")
    w.record_error("okx: checksum mismatch on BTC-USDT")
    w.set_running()
    w.heartbeat()
    yield w
    w.close()


def test_status_json_reads_feeds_and_symbols_from_the_segment(published, namespace, capsys):
    code, out, _ = run_cli(["status", "--namespace", namespace, "--json", "--interval", "0"], capsys)
    assert code == 0
    status = json.loads(out)
    assert status["namespace"] == namespace and status["supervisor"] is None
    [feed] = status["feeds"]
    assert feed["exchange"] == "okx" and feed["pid"] == os.getpid() and feed["state"] == "running"
    assert feed["restarts"] == 0 and feed["alive"] and feed["generation"] == 1
    assert feed["counters"]["reconnects"] == 1 and feed["last_error"]["text"].startswith("okx: checksum")
    btc, eth = feed["symbols"]
    assert (btc["symbol"], btc["market"], btc["state"], btc["bid"], btc["ask"]) == \
        ("BTC/USDT", "SPOT", "live", 100.5, 101.25)
    assert btc["gaps"] == 2 and btc["messages"] == 3 and btc["latency_us"] >= 50 and 0 <= btc["age_s"] < 60
    assert (eth["symbol"], eth["state"], eth["bid"], eth["ask"]) == ("ETH/USDT:USDT", "syncing", None, None)


def test_status_rates_come_from_two_samples(published, namespace, capsys):
    from mdengine.engine.status import StatusSampler

    with StatusSampler(namespace) as sampler:
        first = sampler.sample()
        assert first["feeds"][0]["messages_per_s"] is None  # one sample: no rate yet
        published.count("messages", 100)
        published.stat(0, "messages", 100)
        time.sleep(0.2)
        second = sampler.sample()
    feed = second["feeds"][0]
    assert 0 < feed["messages_per_s"] <= 100 / 0.2
    assert feed["symbols"][0]["messages_per_s"] == feed["messages_per_s"]
    assert feed["cpu_percent"] is not None and feed["rss_bytes"] > 0


def test_status_marks_books_of_a_silent_writer_stale(published, namespace, capsys):
    published.heartbeat(time.time_ns() - 10 * 10**9)
    code, out, _ = run_cli(["status", "--namespace", namespace, "--json", "--interval", "0"], capsys)
    feed = json.loads(out)["feeds"][0]
    assert feed["state"] == "stalled" and feed["heartbeat_age_s"] >= 10
    assert feed["symbols"][0]["state"] == "stale"


def test_status_text_and_top_once_show_the_table(published, namespace, capsys):
    code, out, _ = run_cli(["status", "--namespace", namespace, "--interval", "0.05"], capsys)
    assert code == 0
    assert "no supervisor running" in out
    assert "okx BTC/USDT" in out and "100.5" in out and "101.25" in out and "syncing" in out
    assert "last error okx: okx: checksum mismatch" in out
    code, out, _ = run_cli(["top", "--namespace", namespace, "--once", "--interval", "0.05"], capsys)
    assert code == 0 and "okx BTC/USDT" in out and "MSG/S" in out


def test_status_of_an_empty_namespace_says_so_and_exits_1(namespace, capsys):
    code, out, _ = run_cli(["status", "--namespace", namespace, "--interval", "0"], capsys)
    assert code == 1 and "no feeds" in out and "no supervisor running" in out


def test_clean_unlinks_segments_of_dead_owners_only(namespace, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    create_segment(namespace, "okx", max_symbols=1, book_capacity=1, trade_capacity=2, owner_pid=dead.pid)
    create_segment(namespace, "bybit", max_symbols=1, book_capacity=1, trade_capacity=2)  # owner: this process
    code, out, _ = run_cli(["clean", "--namespace", namespace], capsys)
    assert code == 0
    assert f"mde-{namespace}-okx: unlinked" in out and f"mde-{namespace}-bybit: kept" in out
    assert list_names(namespace) == [f"mde-{namespace}-bybit"]


def test_clean_keeps_an_unreadable_segment_unless_forced(namespace, capsys):
    name = shm.segment_name(namespace, "okx")
    shm.create(name, 4096).close()  # no magic: half-created or foreign
    code, out, _ = run_cli(["clean", "--namespace", namespace], capsys)
    assert "kept: unreadable" in out and list_names(namespace) == [name]
    code, out, _ = run_cli(["clean", "--namespace", namespace, "--force"], capsys)
    assert "unlinked (unreadable" in out and list_names(namespace) == []


def test_missing_dispatched_module_gives_a_clear_message(monkeypatch, capsys):
    monkeypatch.setitem(cli.DISPATCHED, "replay", ("mdengine.no_such_module", "replay_main", "x"))
    code, _, err = run_cli(["replay", "x.jsonl"], capsys)
    assert code == 1 and "mdengine replay: not available" in err and "no_such_module" in err


def test_sim_is_dispatched_with_its_own_arguments(capsys):
    code, _, err = run_cli(["sim", "--exchanges", "nosuch"], capsys)
    assert code == 2 and "mdengine sim" in err


def test_python_dash_m_mdengine_and_no_command(capsys):
    out = subprocess.run([sys.executable, "-m", "mdengine", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("run", "status", "top", "clean", "sim", "replay", "export", "feed"):
        assert command in out.stdout
    code, out, _ = run_cli([], capsys)
    assert code == 2 and "COMMAND" in out


def test_library_never_imports_the_cli():
    code = ("import sys, mdengine, mdengine.engine.supervisor, mdengine.engine.status, mdengine.engine.control, "
            "mdengine.engine.configfile; "
            "print('mdengine.engine.cli' in sys.modules or 'mdengine.cli' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_supervisor_script_is_mdengine_run_and_keeps_the_callers_directory(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "mdengine-supervisor")
    (tmp_path / "engine.toml").write_text('[[exchanges]]\nname = "okx"\nbook_mode = "full"\n')
    out = subprocess.run([script, "--config", "engine.toml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "engine.toml: exchanges[0].book_mode: expected one of diff, partial" in out.stderr


def test_status_sampler_follows_a_recreated_segment(published, namespace):
    from mdengine.engine.status import StatusSampler

    with StatusSampler(namespace) as sampler:
        assert [s["symbol"] for s in sampler.sample()["feeds"][0]["symbols"]] == ["BTC/USDT", "ETH/USDT:USDT"]
        shm.unlink(shm.segment_name(namespace, "okx"))  # a new supervisor recreates the namespace
        with SegmentWriter(namespace, "okx", create=True, max_symbols=2, book_capacity=5, trade_capacity=16) as w:
            w.add_symbol("SPOT", "SOL-USDT", "SOL/USDT")
            assert [s["symbol"] for s in sampler.sample()["feeds"][0]["symbols"]] == ["SOL/USDT"]
        shm.unlink(shm.segment_name(namespace, "okx"))
        assert sampler.sample()["feeds"] == []


IN_PROCESS_RUNS = '''
import logging
import os
import socket

from mdengine.engine import cli
from mdengine.engine.control import socket_address

NAMESPACE = os.environ["NS"]


def test_run_in_process_logs_to_the_captured_stderr(tmp_path, capsys):
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # this process "runs" a supervisor: run stops
    held.bind(socket_address(NAMESPACE))                      # after configure_logging, with exit 1
    held.listen(1)
    try:
        path = tmp_path / "engine.toml"
        path.write_text(f'namespace = "{NAMESPACE}"\\n[[exchanges]]\\nname = "okx"\\nsymbols = ["BTC/USDT"]\\n')
        assert cli.main(["run", "--config", str(path)]) == 1
        logging.getLogger("mdengine.first").warning("first line")
    finally:
        held.close()
    err = capsys.readouterr().err
    assert "already running" in err and "mdengine.first: first line" in err


def test_a_later_test_logs_to_its_own_stderr(capsys):
    logging.getLogger("mdengine.later").warning("later line")
    err = capsys.readouterr().err
    assert "mdengine.later: later line" in err and "Logging error" not in err, err
'''


def test_cli_run_in_process_leaves_no_handler_on_a_closed_stream(tmp_path, namespace):
    """`mdengine run` called in-process sets up logging to stderr while pytest's capsys is stderr; a line logged
    in a later test (capsys closed by then) goes to that test's stderr, with no "--- Logging error ---"."""
    (tmp_path / "test_in_process.py").write_text(IN_PROCESS_RUNS)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_in_process.py"],
                         cwd=tmp_path, env={**os.environ, "NS": namespace}, capture_output=True, text=True,
                         timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "2 passed" in output, output
    assert "Logging error" not in output and "closed file" not in output, output
