"""RabbitMQ with its MQTT plugin (Debian's `rabbitmq-server`): one node, or a cluster of nodes
on this machine, each with its own MQTT port, all private to the caller.

RabbitMQ is the broker here that clusters, and a strict MQTT 3.1.1 peer: a `$share/...`
subscription is granted and receives nothing, and a retained message reaches exact-topic
subscriptions only, never a wildcard one (docs/protocol.md, "What the protocol needs from a
broker"). Its MQTT client-id tracking needs a majority of the cluster's nodes, so a cluster
that must survive a node's loss has three.

    with RabbitCluster(3) as cluster:          # ~15 s to start on two cores
        cluster.nodes[0].mqtt_port
        cluster.kill(1)                        # a node dies (SIGKILL): its clients reconnect elsewhere

Everything runs as the `rabbitmq` user when started as root, with its own Erlang port mapper
port, cookie (HOME) and data directory, and is stopped and removed on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from host_tools.services._proc import ServiceError, as_user, free_port, give_to, tail, wait_listening

SBIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT_S = 90.0  # a node starts in about 10 s alone; three at once on two busy cores take longer


def _tool(name: str) -> str:
    path = SBIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"{name} not found: install Debian's rabbitmq-server (./dev setup does)")
    return found


@dataclass
class RabbitNode:
    name: str  # Erlang node name, e.g. "doorctl-1a2b3c-0@localhost"
    mqtt_port: int
    amqp_port: int
    dist_port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RabbitCluster:
    """`size` RabbitMQ nodes clustered together (one node: a plain broker)."""

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.dir = Path(tempfile.mkdtemp(prefix="rabbitmq-"))
        self.epmd_port = free_port()
        tag = os.urandom(3).hex()
        self.nodes = [RabbitNode(f"doorctl-{tag}-{i}@localhost", free_port(), free_port(), free_port())
                      for i in range(size)]
        self._started = False

    # -- environment -------------------------------------------------------------------

    def _env(self, node: RabbitNode) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.dir),  # the Erlang cookie: shared by the nodes, private to us
            "LANG": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / f"{self._short(node)}.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }

    @staticmethod
    def _short(node: RabbitNode) -> str:
        return node.name.split("@")[0]

    def _write_config(self) -> None:
        (self.dir / "mnesia").mkdir(exist_ok=True)
        (self.dir / "log").mkdir(exist_ok=True)
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        for node in self.nodes:
            (self.dir / f"{self._short(node)}.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\n"
                f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}\n"
                "mqtt.allow_anonymous = true\n"
                "loopback_users = none\n"
                # An MQTT client's queue survives its node's loss only when mirrored; the
                # platform and the doors use clean sessions, so nothing is kept there anyway.
                "cluster_partition_handling = pause_minority\n")
        give_to("rabbitmq", self.dir)

    # -- lifecycle ---------------------------------------------------------------------

    def _epmd_path(self) -> str:
        found = shutil.which("epmd") or next(iter(Path("/usr/lib/erlang").glob("erts-*/bin/epmd")), None)
        if found is None:
            raise ServiceError("epmd not found: install Debian's rabbitmq-server (./dev setup does)")
        return str(found)

    def start(self) -> RabbitCluster:
        self._write_config()
        # Our own Erlang port mapper, in the foreground: the nodes find it on its port and do
        # not start one of their own (a daemon that would outlive us).
        log = self.dir / "log" / "epmd.out"
        with open(log, "wb") as out:
            self._epmd: subprocess.Popen[bytes] | None = subprocess.Popen(
                [*as_user("rabbitmq"), self._epmd_path(), "-port", str(self.epmd_port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_listening(self.epmd_port, self._epmd, 30, "epmd", log)
        errors: list[BaseException] = []

        def boot(node: RabbitNode) -> None:
            try:
                self._start_node(node)
            except BaseException as e:  # reported below, after every node was tried
                errors.append(e)

        threads = [threading.Thread(target=boot, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        for node in self.nodes[1:]:
            self._join(node, self.nodes[0])
        if len(self.nodes) > 1:
            # An MQTT client's subscription queue lives on the node it connected to; when that
            # node dies, a classic queue stays "down" there and the client's reconnection to
            # another node is refused while it declares it again. Mirrored on every node, the
            # queue moves with the client.
            self.ctl(self.nodes[0], "set_policy", "--apply-to", "queues", "mqtt-mirrored",
                     "^mqtt-subscription-", '{"ha-mode":"all","ha-sync-mode":"automatic"}')
        self._started = True
        return self

    def _start_node(self, node: RabbitNode) -> None:
        log = self.dir / "log" / f"{self._short(node)}.out"
        with open(log, "wb") as out:
            node.proc = subprocess.Popen(
                [*as_user("rabbitmq"), _tool("rabbitmq-server")], env=self._env(node),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        wait_listening(node.mqtt_port, node.proc, START_TIMEOUT_S,
                       f"RabbitMQ node {node.name}", log)

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against one node; its output, or ServiceError with what it said."""
        r = subprocess.run([*as_user("rabbitmq"), _tool("rabbitmqctl"), "-n", node.name, *args],
                           env=self._env(node), capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise ServiceError(f"rabbitmqctl {' '.join(args)} on {node.name}: "
                               f"{(r.stderr or r.stdout).strip()[-300:]}")
        return r.stdout

    def _join(self, node: RabbitNode, seed: RabbitNode) -> None:
        self.ctl(node, "stop_app")
        self.ctl(node, "join_cluster", seed.name)
        self.ctl(node, "start_app")
        log = self.dir / "log" / f"{self._short(node)}.out"
        assert node.proc is not None
        wait_listening(node.mqtt_port, node.proc, START_TIMEOUT_S, f"RabbitMQ node {node.name}", log)

    def stop_app(self, index: int = 0) -> None:
        """The node's broker stops while its Erlang VM runs on: the MQTT listener closes and
        every client is disconnected, a broker outage that `start_app` ends in about a second
        (a node's restart takes ten)."""
        self.ctl(self.nodes[index], "stop_app")

    def start_app(self, index: int = 0) -> None:
        """The node's broker runs again (after `stop_app`), its MQTT listener open."""
        node = self.nodes[index]
        self.ctl(node, "start_app")
        assert node.proc is not None
        wait_listening(node.mqtt_port, node.proc, START_TIMEOUT_S, f"RabbitMQ node {node.name}",
                       self.dir / "log" / f"{self._short(node)}.out")

    def running_nodes(self) -> list[str]:
        """The cluster's running nodes as the first live node sees them."""
        for node in self.nodes:
            if node.alive:
                out = self.ctl(node, "eval", "rabbit_nodes:all_running().")
                return sorted(n.strip(" '[]\n") for n in out.split(",") if n.strip(" '[]\n"))
        return []

    def kill(self, index: int) -> None:
        """The node dies at once (SIGKILL to its process group), as with a power cut."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                try:
                    self.ctl(node, "stop", timeout=30)
                except (ServiceError, subprocess.TimeoutExpired):
                    pass
            if node.proc is not None:
                try:
                    os.killpg(node.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                node.proc.wait(10)
        epmd = getattr(self, "_epmd", None)
        if epmd is not None:
            try:
                os.killpg(epmd.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            epmd.wait(10)
            self._epmd = None

    def log(self, index: int = 0) -> str:
        return tail(self.dir / "log" / f"{self._short(self.nodes[index])}.out", 2000)

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
