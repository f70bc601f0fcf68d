"""Local exchange simulator: Binance spot/USDⓈ-M, OKX, Bybit and Bitget public market data on loopback.

Never imports mdengine.exchanges/book/store: it renders every wire format with its own code.
"""

from mdengine.sim.config import SimConfig
from mdengine.sim.faults import ALL_FAULTS
from mdengine.sim.listings import MARKETS
from mdengine.sim.simulator import Simulator

__all__ = ["ALL_FAULTS", "MARKETS", "SimConfig", "Simulator"]
