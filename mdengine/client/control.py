"""The client's side of the control channel: ask the namespace's supervisor to subscribe or unsubscribe a
symbol, or for its status. The channel itself (socket, peer checks) is `mdengine.engine.control`."""

from __future__ import annotations

from collections.abc import Mapping

from ..engine import control as _channel
from ..errors import ControlError, SubscribeError

SOCKET_GRACE_S = 2.0  # the supervisor waits up to `timeout` for the feed; our deadline leaves it time to answer


class ControlClient:
    """Requests to the supervisor of `namespace`. Raises ControlError if none runs there."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def subscribe(self, exchange: str, symbol: str, market: str | None = None, timeout: float = 5.0) -> dict:
        """The supervisor's answer (unified symbol, market, native, live); SubscribeError if it refused."""
        return self._symbol_op("subscribe", exchange, symbol, market, timeout)

    def unsubscribe(self, exchange: str, symbol: str, market: str | None = None, timeout: float = 5.0) -> dict:
        return self._symbol_op("unsubscribe", exchange, symbol, market, timeout)

    def status(self, timeout: float = 2.0) -> dict:
        return _channel.request(self.namespace, {"op": "status"}, timeout)

    def sim_endpoints(self) -> Mapping[str, str | tuple[str, str]] | None:
        """The simulator's REST endpoints if the supervisor runs on one and says where ({} if it does not say),
        None if it runs on the real exchanges or no supervisor answers."""
        try:
            status = self.status()
        except ControlError:
            return None
        if status.get("sim_endpoints"):
            return {m: tuple(v) if isinstance(v, list) else v for m, v in status["sim_endpoints"].items()}
        return {} if status.get("sim") else None

    def _symbol_op(self, op: str, exchange: str, symbol: str, market: str | None, timeout: float) -> dict:
        answer = _channel.request(self.namespace, {"op": op, "exchange": exchange, "symbol": symbol,
                                                   "market": market, "timeout": timeout}, timeout + SOCKET_GRACE_S)
        if not answer.get("ok"):
            raise SubscribeError(f"{op} {exchange} {symbol}: {answer.get('error') or 'refused'}")
        return answer


__all__ = ["ControlClient"]
