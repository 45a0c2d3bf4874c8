"""A broker that can be taken down and brought back, of either kind the doors run on: what the
HIL rig starts for its door (`pytest hil/ --broker mosquitto|rabbitmq`) and what the virtual
rig's benchmark uses, a real one from Debian's packages (mosquitto.py, rabbitmq.py), private
to its caller and stopped with it.

The two differ where the protocol says a broker may (docs/protocol.md, "What the protocol needs
from a broker"): mosquitto delivers `$share/` subscriptions on MQTT 3.1.1 and retained messages
to wildcard subscriptions; RabbitMQ's MQTT plugin, a strict 3.1.1 broker, does neither, and a
device id's dots come back from it as topic levels. The platform finds out by itself
(`subscription="auto"`); the rig knows (`shared_subscriptions`), so a test can check it did.

The rig's network cut is the broker going down (`down`) and coming back on the same port (`up`).
"""

from __future__ import annotations

from typing import Protocol

from host_tools.services.mosquitto import Mosquitto
from host_tools.services.rabbitmq import RabbitCluster

BROKERS = ("mosquitto", "rabbitmq")


class RigBroker(Protocol):
    name: str
    host: str
    port: int
    shared_subscriptions: bool  # does it deliver `$share/...` subscriptions

    def down(self) -> None:
        """Stop the broker: every client's connection ends, new ones are refused."""
        ...

    def up(self) -> None:
        """The broker back on the same port."""
        ...

    def close(self) -> None:
        """Stop it for good and remove everything it kept."""
        ...


class MosquittoBroker:
    name = "mosquitto"
    shared_subscriptions = True

    def __init__(self) -> None:
        self._broker = Mosquitto().start()
        self.host, self.port = self._broker.host, self._broker.port

    def down(self) -> None:
        self._broker.stop()

    def up(self) -> None:
        self._broker.start()

    def close(self) -> None:
        self._broker.__exit__(None, None, None)


class RabbitBroker:
    """One RabbitMQ node with its MQTT plugin (about 10 s to start). Down is the node's broker
    application stopped, its Erlang VM running on (`rabbitmqctl stop_app`)."""

    name = "rabbitmq"
    shared_subscriptions = False

    def __init__(self) -> None:
        self._cluster = RabbitCluster(1)
        try:
            self._cluster.start()
        except BaseException:
            self._cluster.__exit__(None, None, None)  # whatever of it started, and its folder
            raise
        node = self._cluster.nodes[0]
        self.host, self.port = node.host, node.mqtt_port

    def down(self) -> None:
        self._cluster.stop_app(0)

    def up(self) -> None:
        self._cluster.start_app(0)

    def close(self) -> None:
        self._cluster.__exit__(None, None, None)


def start_broker(name: str) -> RigBroker:
    """A started broker of kind `name` (one of BROKERS)."""
    if name == "mosquitto":
        return MosquittoBroker()
    if name == "rabbitmq":
        return RabbitBroker()
    raise ValueError(f"broker must be one of {', '.join(BROKERS)}, not {name!r}")
