"""Cross-exchange spread monitor: best bid/ask of one symbol on every exchange, and the best crossing spread.

    mdengine run --sim &                      # or a real engine
    python examples/spread_monitor.py BTC/USDT [namespace]   (default: $MDENGINE_NAMESPACE, else "default")
"""

import sys
import time

from mdengine.client import Client, UnknownSymbol

symbol = sys.argv[1] if len(sys.argv) > 1 else "BTC/USDT"
client = Client(sys.argv[2] if len(sys.argv) > 2 else None)
books = {}
for exchange in client.exchanges:
    try:
        books[exchange] = client.book(exchange, symbol)
    except UnknownSymbol:
        print(f"{exchange}: no {symbol}")
last = 0.0
while books:
    client.wait(1.0, books.values())  # sleeps until any of the books changes
    if time.monotonic() - last < 0.5:
        continue
    last = time.monotonic()
    tops = {ex: b.top() for ex, b in books.items()}
    live = {ex: t for ex, t in tops.items() if not t.stale}
    row = "  ".join(f"{ex} {t.bid:.2f}/{t.ask:.2f}{'*' if t.stale else ''}" for ex, t in tops.items())
    if len(live) >= 2:
        buy = min(live, key=lambda ex: live[ex].ask)  # cheapest ask, richest bid
        sell = max(live, key=lambda ex: live[ex].bid)
        edge = (live[sell].bid - live[buy].ask) / live[buy].ask * 1e4
        row += f"  | buy {buy} sell {sell}: {edge:+.1f} bp"
    print(row, flush=True)
