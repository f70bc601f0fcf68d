"""The recorder's tap queue: `mdengine._speedups.tap_queue` (C) and its pure-Python twin `recorder._TapQueue`.

Both keep the same FIFO, bound and counters; the C one may hand a batch over column-wise (the parts of
`record_columns`), which must decode to the very entries tapped. A Recorder on either queue writes the same
records (the file round trips are in test_recorder*.py, which run on the C queue where it is built).
"""

from __future__ import annotations

import gc
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_recorder import T0, _records

from mdengine.recording import tap as recorder_mod
from mdengine.recording.tap import Recorder, _TapQueue
from mdengine.recording.writer import HEADER, MessageReader, encode_batch, encode_columns

C_QUEUE = recorder_mod._tap_queue
needs_c = pytest.mark.skipif(C_QUEUE is None, reason="mdengine._speedups is not built")
QUEUES = [pytest.param(_TapQueue, id="python"), pytest.param(C_QUEUE, id="c", marks=needs_c)]


def _entries(got) -> list[tuple]:
    """What a take() returned, as (kind, url, data, ns) tuples (column-wise parts decoded as the child does)."""
    if isinstance(got, list):
        return got
    meta, raw = encode_columns(got)
    (batch,) = MessageReader().feed(HEADER.pack(len(meta), len(raw)) + meta + raw)
    return batch


def _drain(q, n: int = 7, columns: bool = True) -> list[tuple]:
    out: list[tuple] = []
    while len(q):
        out += _entries(q.take(n, columns))
    return out


@pytest.mark.parametrize("make", QUEUES)
def test_TapQueue_is_a_fifo_that_evicts_and_counts_the_oldest(make):
    q = make(5)
    for i in range(12):
        q.tap("recv", "ws://h/ws", str(i), T0 + i)
    assert (len(q), q.tapped, q.overflow) == (5, 12, 7)
    assert _drain(q, 2) == [("recv", "ws://h/ws", str(i), T0 + i) for i in range(7, 12)]
    assert len(q) == 0 and _entries(q.take(10)) == []  # empty: an empty batch, never an error
    q.tap("send", "u", "again", 1)
    assert _drain(q) == [("send", "u", "again", 1)] and q.tapped == 13


@pytest.mark.parametrize("make", QUEUES)
def test_TapQueue_grows_past_its_first_slots_and_wraps_around(make):
    q = make(5000)
    expect = []
    for round_ in range(3):  # a partial take leaves the head mid-ring: the next taps wrap around it
        for i in range(3000):
            e = ("recv", f"ws://h/{i % 3}", f"{round_}:{i}", T0 + i)
            q.tap(*e)
            expect.append(e)
        got = _drain(q, 1000) if round_ == 2 else _entries(q.take(2500))
        assert got == expect[:len(got)]
        del expect[:len(got)]
    assert not expect and q.overflow == 0


@needs_c
def test_TapQueue_hands_plain_batches_over_column_wise_and_the_rest_as_tuples():
    q = C_QUEUE(100)
    plain = [("recv", "ws://a/ws", "ascii", T0), ("http", "http://b/x", "é €\U0001f600\ud800", T0 + 1)]
    for e in plain:
        q.tap(*e)
    got = q.take(10)
    assert isinstance(got, tuple) and encode_columns(got) == encode_batch(plain, recorder_mod._columns)
    assert _entries(got) == plain
    for e in plain:
        q.tap(*e)
    assert q.take(10, False) == plain  # a list when asked (the in-process writer)
    odd = [("recv", "u", b"\xff", 1), ("recv", "u", None, 2), ("recv", "u", "x", 2**64), ("recv", "u", "x", 1.5),
           ("recv", "u", 42, 3)]
    for e in odd:  # one entry that does not fit the columns makes the whole batch tuples
        q.tap("recv", "u", "fine", 0)
        q.tap(*e)
        got = q.take(10)
        assert got == [("recv", "u", "fine", 0), e]


class _Kind(str):
    pass


@needs_c
def test_TapQueue_columns_only_for_exact_str_kinds_and_urls():
    q = C_QUEUE(10)
    q.tap(_Kind("recv"), "u", "x", 1)  # marshal cannot take a str subclass: the Recorder converts it (_plain)
    assert q.take(10) == [("recv", "u", "x", 1)]


@needs_c
def test_TapQueue_never_raises_on_values_but_rejects_a_wrong_call():
    q = C_QUEUE(3)
    for v in (None, object(), b"", 1.5, "x" * 100_000):
        q.tap(v, v, v, v)
    assert q.tapped == 5 and q.overflow == 2 and len(q) == 3
    with pytest.raises(TypeError):
        q.tap("recv", "u", "x")
    with pytest.raises(ValueError):
        C_QUEUE(0)
    assert q.tapped == 5


class _Reentrant:
    """Taps into its queue when it is freed: an evicted entry's release must find a consistent queue."""

    def __init__(self, q):
        self.q = q

    def __del__(self):
        self.q.tap("recv", "u", "from __del__", 7)


@needs_c
def test_TapQueue_eviction_that_runs_python_code_sees_a_consistent_queue():
    q = C_QUEUE(2)
    q.tap("recv", "u", _Reentrant(q), 1)
    q.tap("recv", "u", "b", 2)
    q.tap("recv", "u", "c", 3)  # evicts the _Reentrant entry, whose __del__ taps (and evicts "b")
    assert q.tapped == 4 and q.overflow == 2
    assert _drain(q, 10, False) == [("recv", "u", "c", 3), ("recv", "u", "from __del__", 7)]


@needs_c
def test_TapQueue_releases_what_it_holds_and_breaks_cycles():
    data = "payload-" + "x" * 100
    before = sys.getrefcount(data)
    q = C_QUEUE(10)
    for _ in range(5):
        q.tap("recv", "u", data, 1)
    assert sys.getrefcount(data) == before + 5
    q.take(2)
    assert sys.getrefcount(data) == before + 3
    del q
    assert sys.getrefcount(data) == before

    q = C_QUEUE(10)
    holder = [q]
    q.tap("recv", "u", holder, 1)  # a cycle through the queue: the collector must free it
    del q, holder
    gc.collect()


_texts = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=30)
_entry = st.tuples(st.sampled_from(["recv", "send", "http"]), st.sampled_from(["ws://a/ws", "http://b/x"]),
                   st.one_of(_texts, _texts, st.binary(max_size=5), st.none()), st.integers(-2**63, 2**63 - 1))


@needs_c
@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.one_of(_entry, st.integers(0, 6)), max_size=60), maxlen=st.integers(1, 8))
def test_TapQueue_C_matches_the_python_twin(ops, maxlen):
    c, py = C_QUEUE(maxlen), _TapQueue(maxlen)
    for op in ops:
        if isinstance(op, int):  # a take of up to op entries
            assert _entries(c.take(op)) == py.take(op)
        else:
            c.tap(*op)
            py.tap(*op)
        assert (len(c), c.tapped, c.overflow) == (len(py), py.tapped, py.overflow)
    assert _drain(c, 3, False) == py.take(100)


@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
@pytest.mark.parametrize("c_queue", [pytest.param(True, id="c", marks=needs_c), pytest.param(False, id="python")])
def test_Recorder_on_either_queue_writes_every_record_in_order(tmp_path, monkeypatch, process, c_queue):
    if not c_queue:
        monkeypatch.setattr(recorder_mod, "_tap_queue", None)
    rec = Recorder(tmp_path, "okx", process=process, poll_interval_s=0.005)
    assert isinstance(rec._q, _TapQueue) != c_queue
    for i in range(3000):
        rec.tap("recv", "ws://h/ws", f'{{"i":{i}}}' if i % 500 else b"\x00\xff", T0 + i)
    Recorder.tap(rec, "send", "ws://h/ws", "via the class", T0 + 3000)
    rec.close()
    st_ = rec.stats()
    assert (st_.tapped, st_.written, st_.dropped, st_.queued) == (3001, 3001, 0, 0)
    (name,) = [p.name for p in tmp_path.iterdir()]
    data = [r.data for r in _records(str(tmp_path / name))]
    assert data[1:500] == [f'{{"i":{i}}}' for i in range(1, 500)] and data[-1] == "via the class"
    assert len(data) == 3001
