"""A real Milvus server for tests and benchmarks: the standalone binary of the PyPI package `milvus` (2.3.5, with
embedded etcd and local storage; no Docker, nothing downloaded), one process in a folder of its own.

Every component is told to register and dial 127.0.0.1 (by default each one registers the machine's first
non-loopback address and the others dial it), and the embedded etcd listens on 127.0.0.1 on ports of its own
(by default 2379 and 2380 on every address, which a second server on the machine cannot take), so the server's
traffic stays on loopback and servers can run side by side. Its gRPC port is the one asked for, exactly, on every
start: `start` waits until the port can be bound (the previous run's process gone) and writes it into the
configuration itself, where the package's launcher would move to the next free port while the old connections
sit in TIME_WAIT. `stop` is a graceful stop (SIGTERM, as `docker stop` and Kubernetes send; SIGKILL after a
grace period), `kill` a hard one (a crash or a lost machine); `start` again reopens the same data folder, with
every component on the port it had (about 10 s to a server that answers, after a stop or a kill).

The `milvus_server` fixture (session-scoped, registered by tests/conftest.py) starts one per test run in a
temporary folder on a free port and kills it at the end; tests that use it are marked slow.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# the components that register an address for the others to dial (milvus/data/config.yaml.template, "ip:")
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def bind(port: int) -> socket.socket | None:
    """A socket bound to `port` on loopback as a server binds it (SO_REUSEADDR: connections in TIME_WAIT do not
    count), or None while something else holds it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as e:
        sock.close()
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise
    return sock


class LocalMilvus:
    """One Milvus standalone server from the `milvus` package, in `data`, serving gRPC on 127.0.0.1:`port`."""

    def __init__(self, data: Path, port: int | None = None, config: dict[str, object] | None = None) -> None:
        self.data = Path(data)
        self.port = port or free_port()
        self.config = {f"{c}.ip": LOOPBACK for c in COMPONENTS} | (config or {})
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.metrics_port = 0  # the health endpoint's, chosen at each start
        self.component_ports: dict[str, int] = {}  # the other components' (root coord, ...), fixed at the first start
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def location(self, collection: str) -> str:
        return f"milvus://{LOOPBACK}:{self.port}/{collection}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the server (again) on its ports and data folder; return once it answers a client."""
        import milvus

        if self.running:
            raise RuntimeError(f"Milvus is already running (pid {self.pid})")
        deadline = time.monotonic() + timeout_s
        # The gRPC and etcd ports, and from the second start on every component's port of the first: a component
        # restarted at another address could find a stale etcd session of another component at its old one (a
        # stop past its grace period, a kill) and give up ("unknown service"), where the same address is the
        # same component again.
        ports = (self.port, self.etcd_port, self.etcd_peer_port, *self.component_ports.values())
        held = []
        try:
            for port in ports:  # held while the launcher picks the other components' ports, so it picks others
                while (sock := bind(port)) is None:  # the previous run's server still exiting, or another process
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"port {port} still taken after {timeout_s:.0f} s")
                    time.sleep(0.5)
                held.append(sock)
            config = milvus.MilvusServerConfig(data_dir=str(self.data))
            for key, value in self.config.items():
                config.set(key, value)
            config.resolve()  # the components' ports: the first free ones from Milvus's defaults up
        finally:
            for sock in held:
                sock.close()
        # Then those ports exactly: the launcher's own check binds without SO_REUSEADDR, so a port in TIME_WAIT
        # after a stop would move it to the next free one; Milvus (Go) listens with SO_REUSEADDR.
        if not self.component_ports:
            self.component_ports = {key: value[1] for key, value in config.configurable_items.items()
                                    if key.endswith("_port") and key not in ("proxy_port", "etcd_port")}
        for key, port in self.component_ports.items():
            config.configurable_items[key][1] = port
        config.configurable_items["proxy_port"][1] = self.port
        config.configurable_items["etcd_port"][1] = self.etcd_port
        config.write_config()
        milvus._initialize_data_files(str(self.data))  # unpacks bin/milvus and its libraries (once)
        # The embedded etcd listens on its own defaults (2379, 2380 on every address) unless given a config file:
        # both on loopback, on ports of this server's own, so that servers can run side by side.
        etcd = self.data / "configs" / "embed-etcd.yaml"
        client, peer = f"http://{LOOPBACK}:{self.etcd_port}", f"http://{LOOPBACK}:{self.etcd_peer_port}"
        etcd.write_text(f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
                        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                        f"initial-cluster: default={peer}\n", encoding="utf-8")
        self.metrics_port = free_port()
        binary = self.data / "bin" / "milvus"
        env = os.environ | {"DEPLOY_MODE": "STANDALONE", "METRICS_PORT": str(self.metrics_port),
                            "MILVUS_RUN_DIR": str(self.data / "run"), "ETCD_CONFIG_PATH": str(etcd),
                            "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        with (self.data / "logs" / "milvus-stdout.log").open("a") as out, \
                (self.data / "logs" / "milvus-stderr.log").open("a") as err:
            self.process = subprocess.Popen([str(binary), "run", "standalone"], cwd=self.data, env=env, stdout=out,
                                            stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_healthy(deadline)
        except BaseException:
            self.kill()
            raise

    def _wait_healthy(self, deadline: float) -> None:
        health = f"http://{LOOPBACK}:{self.metrics_port}/healthz"
        while True:
            if not self.running:
                raise RuntimeError(f"Milvus exited with {self.process.returncode}: see {self.log}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(health, timeout=2) as answer:
                    if b"OK" in answer.read():
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Milvus not healthy at {health}: see {self.log}")
            time.sleep(0.2)
        from pymilvus import MilvusClient

        while True:  # healthz answers before the proxy serves every call: wait for a real one
            try:
                client = MilvusClient(uri=self.uri, timeout=5)
                client.list_collections()
                client.close()
                return
            except Exception:  # noqa: BLE001 - any pymilvus or gRPC error: not ready yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def log(self) -> Path:
        return self.data / "logs" / "milvus-stdout.log"

    def stop(self, grace_s: float = 10.0) -> None:
        """A graceful stop (SIGTERM, then SIGKILL after `grace_s`)."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._close()

    def kill(self) -> None:
        """A hard stop: SIGKILL, nothing flushed."""
        if self.running:
            self.process.kill()
            self.process.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        self.process = None

    def connections(self) -> list[tuple[str, str]]:
        """(local, peer) address of each TCP connection the server process holds (`ss -tnp`)."""
        out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, timeout=30, check=True).stdout
        found = []
        for line in out.splitlines():
            if f"pid={self.pid}," in line:
                fields = line.split()
                found.append((fields[3].rsplit(":", 1)[0], fields[4].rsplit(":", 1)[0]))
        return found


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1, in the forms `ss` prints ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")."""
    address = address.strip("[]").removeprefix("::ffff:")
    return address.startswith("127.") or address == "::1"


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMilvus]:
    """One real Milvus server for the whole run (slow tests only: it takes about 10 s to start)."""
    pytest.importorskip("milvus")
    pytest.importorskip("pymilvus")
    server = LocalMilvus(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    try:
        yield server
    finally:
        server.kill()  # its data is thrown away: no need to wait for a graceful stop
