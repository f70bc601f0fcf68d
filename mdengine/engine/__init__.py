"""The engine's operations side: the supervisor and its control server, configuration, status and the CLI.

- `supervisor`: `Supervisor` starts, watches and restarts one feed process per exchange;
- `control`: the control channel (an abstract Unix socket with peer checks), served by the supervisor;
- `config`: the dataclasses every part passes around; `configfile`: engine.toml loading and validation;
- `status`: what ``mdengine status`` and ``mdengine top`` show; `cli`: the ``mdengine`` command;
  `signals`: stopping a command on SIGINT/SIGTERM.

The names below load on first use (PEP 562): a feed importing `config` does not load the supervisor.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Supervisor": "supervisor", "ControlServer": "control", "EngineConfig": "config",
            "ExchangeConfig": "config", "RestartPolicy": "config", "load_config": "configfile",
            "StatusSampler": "status"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
