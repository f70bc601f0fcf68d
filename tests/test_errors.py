"""One exception tree rooted in mdengine.MdengineError, one unknown-symbol type, and public names that stay
importable from `mdengine` (like httpx's test_exported_members)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import mdengine
from mdengine import errors
from mdengine.core.types import MarketKind
from mdengine.symbols import Instrument, InstrumentIndex


def test_exported_members_are_sorted_and_exist() -> None:
    assert mdengine.__all__ == sorted(mdengine.__all__)
    assert len(set(mdengine.__all__)) == len(mdengine.__all__)
    for name in mdengine.__all__:
        assert getattr(mdengine, name) is not None, name
    assert set(mdengine.__all__) <= set(dir(mdengine))
    assert set(errors.__all__) <= set(mdengine.__all__)
    with pytest.raises(AttributeError):
        mdengine.NoSuchName  # noqa: B018


def test_every_error_is_an_mdengine_error_and_keeps_its_builtin_base() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(c, errors.MdengineError) for c in classes)
    builtin_bases = {"UnknownSymbol": KeyError, "ConfigError": ValueError, "LayoutError": RuntimeError,
                     "SegmentNotFound": FileNotFoundError, "SegmentExists": FileExistsError,
                     "StoreFull": RuntimeError, "ReadContention": RuntimeError, "EngineNotFound": RuntimeError,
                     "StaleBookError": RuntimeError, "SubscribeError": RuntimeError, "ControlError": RuntimeError}
    for name, base in builtin_bases.items():
        assert issubclass(getattr(errors, name), base), name
    missing = errors.SegmentNotFound(2, "No such file or directory", "/dev/shm/mde-x-y")
    assert missing.errno == 2 and missing.filename == "/dev/shm/mde-x-y"


def test_old_homes_hold_the_same_classes() -> None:
    from mdengine import client, exchanges, store
    from mdengine.engine import configfile, control
    from mdengine.engine.control import NoSupervisor, Squatter, SupervisorRunning
    from mdengine.store import reader

    assert store.UnknownSymbol is reader.UnknownSymbol is client.UnknownSymbol is mdengine.UnknownSymbol
    assert store.LayoutError is errors.LayoutError and store.SegmentNotFound is errors.SegmentNotFound
    assert store.StoreFull is errors.StoreFull and store.ReadContention is errors.ReadContention
    assert control.ControlError is errors.ControlError and configfile.ConfigError is errors.ConfigError
    assert exchanges.AdapterError is errors.AdapterError and client.StaleBookError is errors.StaleBookError
    assert all(issubclass(c, mdengine.MdengineError) for c in (NoSupervisor, Squatter, SupervisorRunning))


def test_one_unknown_symbol_type_for_instruments_and_segments() -> None:
    index = InstrumentIndex([Instrument("binance", "spot", "BTCUSDT", "BTC/USDT", MarketKind.SPOT, "BTC", "USDT")])
    with pytest.raises(mdengine.UnknownSymbol, match="unknown symbol 'ETH/USDT'") as caught:
        index.resolve("ETH/USDT")
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, mdengine.MdengineError)
    assert str(caught.value) == "unknown symbol 'ETH/USDT'"  # not KeyError's quoted repr


def test_the_old_instrument_error_name_warns_and_is_the_one_type() -> None:
    import mdengine.symbols

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = mdengine.symbols.UnknownSymbolError
    assert old is mdengine.UnknownSymbol
    assert [w.category for w in caught] == [DeprecationWarning]


def test_stale_book_error_pickles_with_its_fields() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(errors.StaleBookError("okx", "BTC/USDT", 2.5, "stale", "writer dead")))
    assert (e.exchange, e.symbol, e.age_s, e.state, e.reason) == ("okx", "BTC/USDT", 2.5, "stale", "writer dead")
    assert str(e) == "okx BTC/USDT: stale book (writer dead; state stale, age 2.500 s)"


def test_errors_module_imports_nothing_of_mdengine() -> None:
    code = ("import sys, mdengine.errors; "
            "print(sorted(m for m in sys.modules if m.startswith('mdengine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "['mdengine', 'mdengine.errors']"
