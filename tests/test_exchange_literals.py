"""One home per exchange: outside `mdengine/exchanges/` and `mdengine/sim/`, code asks the exchange registry instead of
naming exchanges. Counts string literals whose value names an exchange ("okx", "binance-usdm", ...)."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from mdengine.exchanges import EXCHANGES

PACKAGE = Path(__file__).resolve().parent.parent / "mdengine"
EXEMPT = ("exchanges", "sim")  # the exchanges' own packages, and the simulator that plays them
LIMIT = 10


def names_exchange(value: str) -> bool:
    """True for an exchange name or a market name built on one ("binance-spot")."""
    v = value.lower()
    return any(v == name or v.startswith(name + "-") for name in EXCHANGES)


def exchange_literals(source: str) -> list[tuple[int, str]]:
    """(line, value) of every string token of `source` that names an exchange (docstrings and f-strings never do)."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.STRING:
            continue
        try:
            value = ast.literal_eval(tok.string)
        except (ValueError, SyntaxError):  # f-strings and other non-constant tokens
            continue
        if isinstance(value, str) and names_exchange(value):
            out.append((tok.start[0], value))
    return out


def literals_outside_exchanges() -> dict[str, list[tuple[int, str]]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in EXEMPT:
            continue
        hits = exchange_literals(path.read_text(encoding="utf-8"))
        if hits:
            found[rel.as_posix()] = hits
    return found


def test_counter_sees_names_and_market_names_only():
    src = 'x = "okx"\ny = ("binance-usdm", "BYBIT", "bitgetx", "spot")\n"""docstring naming okx"""\nz = f"{x}okx"\n'
    assert exchange_literals(src) == [(1, "okx"), (2, "binance-usdm"), (2, "BYBIT")]


def _report(found: dict[str, list[tuple[int, str]]]) -> str:
    return "; ".join(f"{f}: {len(h)} ({', '.join(f'{line}:{v}' for line, v in h)})" for f, h in found.items())


def test_exchange_names_live_in_their_packages():
    found = literals_outside_exchanges()
    total = sum(map(len, found.values()))
    assert total <= LIMIT, (f"{total} exchange-name literals outside mdengine/exchanges and mdengine/sim "
                            f"(limit {LIMIT}): {_report(found)}")
