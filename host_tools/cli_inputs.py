"""Values every command reads the same way, checked before anything is done with them: a
broker address (HOST:PORT, mqtt:// or mqtts://), whether that broker answers and speaks
what the command is about to speak, and a platform database that must already exist.
Each check raises a UserError whose message names the option and says what to do."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from host_tools.errors import EXIT_UNREACHABLE, EXIT_USAGE, UserError

if TYPE_CHECKING:
    from reference_platform.store import Store

SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
PROBE_TIMEOUT = 3.0
# MQTT 3.1.1 CONNECT, clean session, keepalive 10 s, client id "doorctl-probe".
_CONNECT = (b"\x10\x19\x00\x04MQTT\x04\x02\x00\x0a\x00\x0ddoorctl-probe")


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool | None  # True: mqtts://, False: mqtt://, None: HOST:PORT (the TLS options decide)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_broker(value: str, option: str = "--broker") -> Broker:
    """HOST:PORT, [IPv6]:PORT, mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (8883)."""
    text = value.strip()
    tls: bool | None = None
    default_port: int | None = None
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in SCHEMES:
            raise UserError(f"{option} {value!r}: scheme {scheme}:// is not MQTT; use HOST:PORT, "
                            "mqtt://HOST:PORT or mqtts://HOST:PORT", EXIT_USAGE)
        tls, default_port = SCHEMES[scheme.lower()]
        text = rest.rstrip("/")
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port = tail.removeprefix(":") if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            host = ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = (text, "") if ":" not in text else ("", "")
    if not port and default_port is not None:
        port = str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise UserError(f"{option} {value!r}: must be HOST:PORT with a port 1-65535, e.g. "
                        "10.0.0.5:1883 or mqtts://broker.example:8883", EXIT_USAGE)
    return Broker(host, int(port), tls)


def check_broker(broker: Broker, tls: bool, option: str = "--broker") -> None:
    """The broker answers on its port, and with TLS when `tls` (plain MQTT otherwise): a
    wrong port or a TLS port without --tls-ca is named in seconds, not after a long wait."""
    if broker.tls is True and not tls:
        raise UserError(f"{option} {broker.host}:{broker.port} is mqtts:// (TLS): give --tls-ca "
                        "with the CA of the broker's certificate", EXIT_USAGE)
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=PROBE_TIMEOUT)
    except socket.gaierror:
        raise UserError(f"{option} {broker}: the name {broker.host} does not resolve",
                        EXIT_UNREACHABLE) from None
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UserError(f"cannot reach the MQTT broker at {broker} ({why.lower()}): is it running, "
                        "and is that its port? (a local one: mosquitto -p PORT)",
                        EXIT_UNREACHABLE) from None
    if tls:
        sock.close()  # the TLS client says what is wrong with the handshake
        return
    try:
        sock.sendall(_CONNECT)
        first = sock.recv(1)
    except TimeoutError:  # accepted, then silence: a hung or overloaded broker, worth a wait
        raise UserError(f"cannot reach the MQTT broker at {broker} (it accepts TCP but gives no "
                        f"MQTT answer in {PROBE_TIMEOUT:g} s): is it hung or overloaded?",
                        EXIT_UNREACHABLE) from None
    except OSError:
        first = b""
    finally:
        sock.close()
    if first[:1] == b"\x20":  # CONNACK: plain MQTT
        return
    if first[:1] in (b"\x15", b"\x16"):  # a TLS alert or handshake record
        raise UserError(f"the broker at {broker} speaks TLS: give --tls-ca (the CA of its "
                        "certificate), or use its plain MQTT port", EXIT_UNREACHABLE)
    raise UserError(f"the service at {broker} does not answer as an MQTT broker (no CONNACK): a TLS "
                    "port needs --tls-ca; otherwise check the port", EXIT_UNREACHABLE)


def open_store(db: str, option: str = "--db") -> Store:
    """A platform database that exists: a typo is named rather than opened as a new, empty
    one (only `doorctl platform run` creates the database)."""
    from reference_platform.store import Store

    if not db.startswith(("postgresql://", "postgres://")):
        path = Path(db.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UserError(f"{option} {db}: no such database (`doorctl platform run --db {db}` "
                            "creates it)", EXIT_USAGE)
    try:
        return Store(db)
    except ImportError:
        raise UserError(f"{option} {db}: PostgreSQL needs the psycopg package "
                        "(pip install psycopg)", 5) from None
    except Exception as e:  # sqlite3 / psycopg errors: not a database, refused, unreachable
        raise UserError(f"{option} {db}: cannot be opened as the platform's database "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})", EXIT_USAGE) from None


def known_device(store: Store, device: str, option: str = "door") -> None:
    """The platform has heard of `device`: a typo is named, with the doors it knows."""
    doors = store.devices()
    if device not in doors:
        shown = ", ".join(doors[:8]) + (", ..." if len(doors) > 8 else "")
        raise UserError(f"{option} {device!r}: not known to the platform in {store.url} "
                        f"(doors: {shown or 'none yet'})", EXIT_USAGE)
