"""The layers import downwards only: the core, the book and the adapters never load the shared-memory store
(or the client), so a sans-I/O piece can be used, and tested, without it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

LOW_LAYERS = ["mdengine.core", "mdengine.core.types", "mdengine.core.events", "mdengine.events", "mdengine.book",
              "mdengine.symbols", "mdengine.exchanges", "mdengine.exchanges.binance", "mdengine.exchanges.okx",
              "mdengine.exchanges.bybit", "mdengine.exchanges.bitget"]


def _loaded_after_import(module: str) -> list[str]:
    """The mdengine modules a fresh interpreter has loaded after importing `module` alone."""
    code = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mdengine'))))")
    out = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("module", LOW_LAYERS)
def test_low_layers_do_not_load_the_store_or_the_client(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert module in loaded
    leaks = [m for m in loaded if m.startswith(("mdengine.store", "mdengine.client", "mdengine.feed",
                                                  "mdengine.rest", "mdengine.engine.control"))]
    assert leaks == [], f"importing {module} loads {leaks}"


def test_the_store_takes_its_core_types_from_the_core() -> None:
    from mdengine import core
    from mdengine.store import layout

    assert layout.MarketKind is core.MarketKind
    assert layout.Side is core.Side
    assert layout.TradeFlags is core.TradeFlags
    assert (layout.MarketKind.SPOT, layout.MarketKind.LINEAR, layout.MarketKind.INVERSE) == (0, 1, 2)
    assert "mdengine.store" in _loaded_after_import("mdengine.store.layout")
