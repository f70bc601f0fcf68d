"""The client package's pieces take their offsets and field names from the layout, and its control client
speaks for the namespace's supervisor."""

from __future__ import annotations

import struct
import uuid

import pytest

import mdengine
from mdengine.client import control as client_control
from mdengine.client import shm
from mdengine.store import layout as L


def test_freshness_fields_come_from_the_layout() -> None:
    header = bytearray(L.BOOK_HEADER_LENGTH)
    struct.pack_into(L.BOOK_HEADER_STRUCT, header, 0, 7, 11, 1_234_567, 2_345_678, 3, 4, L.BookState.RESYNCING,
                     L.BookFlags.CROSSED, 5, 6)
    assert shm._FRESHNESS.unpack_from(header, 0) == (1_234_567, 2_345_678, L.BookState.RESYNCING)


def test_top_full_fields_are_named_from_the_layout() -> None:
    header = struct.Struct(L.BOOK_HEADER_STRUCT + "4d").pack(7, 11, 12, 13, 1, 1, L.BookState.LIVE, 0, 5, 6,
                                                            100.5, 2.0, 101.5, 3.0)
    t = struct.unpack(L.BOOK_HEADER_STRUCT + "4d", header)
    named = dict(zip(shm.TOP_FULL_FIELDS, t, strict=True))
    assert (named["update_id"], named["recv_ts_ns"], named["pub_ts_ns"], named["state"]) == (7, 12, 13, 2)
    assert (t[shm._BID_PX], t[shm._BID_QTY], t[shm._ASK_PX], t[shm._ASK_QTY]) == (100.5, 2.0, 101.5, 3.0)
    assert (t[shm._UPDATE_ID], t[shm._RECV_TS], t[shm._PUB_TS], t[shm._STATE]) == (7, 12, 13, 2)


def test_control_client_without_a_supervisor_raises_control_error() -> None:
    namespace = "t" + uuid.uuid4().hex[:10]
    ctl = client_control.ControlClient(namespace)
    with pytest.raises(mdengine.ControlError, match=namespace):
        ctl.subscribe("binance", "BTC/USDT", timeout=0.5)
    assert ctl.sim_endpoints() is None  # nobody to ask: the real exchanges' hosts
