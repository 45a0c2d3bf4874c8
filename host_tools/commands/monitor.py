"""`doorctl monitor`: a door's live state, events and alarms from the platform's MQTT topics;
`doorctl flash`: MicroPython onto an ESP32 with esptool, then the firmware."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from host_tools.errors import (
    EXIT_FAILED,
    EXIT_NO_DEVICE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UserError,
    fail,
)
from wire import codes as ev
from wire import common
from wire.names import EVENT_NAMES, deny_reason_name
from wire.platform import (
    decode_cache_state,
    decode_events,
    decode_presence,
    decode_register,
    decode_reply,
    decode_status,
)

ALARMS = {ev.SETUP_FAULT, ev.FORCED_OPEN, ev.HELD_OPEN, ev.HELD_OPEN_PREALARM, ev.CLOSER_FAULT,
          ev.SENSOR_TAMPER, ev.DEVICE_TAMPER, ev.POWER_LOST, ev.JOURNAL_NEAR_FULL}


def describe(leaf: str, payload: bytes) -> dict[str, Any] | None:
    """One readable record per message on a door's topics (None: not worth a line)."""
    if leaf == "events":
        out = []
        for e in decode_events(payload):
            code, arg = e[common.E_CODE], e[common.E_ARG]
            name = EVENT_NAMES.get(code, str(code))
            if code == ev.ACCESS_DENIED:
                name += " (" + deny_reason_name(arg) + ")"
            elif code == ev.ACCESS_GRANTED:
                name += " (" + {1: "card", 2: "REX", 3: "remote"}.get(arg, str(arg)) + ")"
            data = e[common.E_DATA] or None
            carded = code in (ev.ACCESS_GRANTED, ev.ACCESS_DENIED)
            out.append({"seq": e[common.E_SEQ], "event": name, "alarm": code in ALARMS,
                        "time": e[common.E_TIME], "utc": bool(e[common.E_FLAGS] & 1),
                        "card": data[:16] if carded and data else None,
                        "data": None if carded else data})
        return {"kind": "events", "events": out}
    if leaf == "status":
        s = decode_status(payload)
        return {"kind": "status", "door": s.get("door"), "mode": s.get("mode"),
                "lock": s.get("lock"), "alarms": s.get("alarms"), "journal": s.get("journal_depth"),
                "cache": s.get("cache_version"), "reader": s.get("reader")}
    if leaf == "presence":
        p = decode_presence(payload)
        return {"kind": "presence", "online": p["online"], "fw": p.get("fw")}
    if leaf == "reply":
        return {"kind": "reply", **decode_reply(payload)}
    if leaf == "cache_state":
        return {"kind": "whitelist", **decode_cache_state(payload)}
    if leaf == "register":
        return {"kind": "register", **decode_register(payload)}
    return None


def line(rec: dict[str, Any]) -> list[str]:
    k = rec["kind"]
    if k == "events":
        return [f"{'ALARM ' if e['alarm'] else ''}#{e['seq']} {e['event']}"
                + (f" card {e['card']}" if e.get("card") else "")
                + (f" data {e['data']}" if e.get("data") else "") for e in rec["events"]]
    if k == "status":
        alarms = ", ".join(rec["alarms"] or []) or "none"
        reader = f"; reader {rec['reader']}" if rec.get("reader") else ""
        return [f"door {rec['door']}, {rec['mode']}, lock {rec['lock']}; alarms: {alarms}; "
                f"journal {rec['journal']}; whitelist v{rec['cache']}{reader}"]
    if k == "presence":
        return ["online" + (f" (firmware {rec['fw']})" if rec.get("fw") else "") if rec["online"]
                else "OFFLINE"]
    if k == "register":
        from host_tools.commands.platform.cards import registered_as

        return ["registered as " + registered_as(rec)]
    if k == "reply":
        return [f"command {rec['id']}: " + ("done" if rec.get("ok") else f"refused {rec.get('reason')}")]
    return [f"whitelist v{rec['version']}" + (f", refused: {rec['reason']}" if rec.get("reason") else "")]


FIRST_WORD_S = 3.0  # a known door's retained messages arrive at once


def monitor(
    door: str = typer.Option(..., "--door", help="The door's device id, e.g. hz.b12.d3."),
    broker: str = typer.Option("127.0.0.1:1883", help="The platform's broker HOST:PORT "
                               "(or mqtt://HOST:PORT, mqtts://HOST:PORT)."),
    seconds: float = typer.Option(0, help="Stop after this many seconds (0: until Ctrl-C)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per message."),
    tls_ca: str = typer.Option(None, "--tls-ca", help="CA certificate file: connect with TLS."),
    tls_cert: str = typer.Option(None, "--tls-cert", help="Client certificate (PEM), with --tls-key."),
    tls_key: str = typer.Option(None, "--tls-key", help="The client certificate's private key (PEM)."),
    wait: bool = typer.Option(False, "--wait", help="Watch a door that has never connected yet "
                              "(otherwise an unknown door id is an error)."),
) -> None:
    """Watch a door live: presence, patrol state, events and alarms, command replies and its
    whitelist version, as the platform sees them. A door id the broker has never heard of is
    refused after a few seconds (a typo), unless --wait.

    Examples:
      doorctl monitor --door hz.b12.d3 --broker 10.0.0.5:1883
      doorctl monitor --door hz.b12.d3 --json --seconds 60 > door.jsonl
      doorctl monitor --door hz.b12.d3 --broker 10.0.0.5:8883 --tls-ca ca.pem
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from host_tools.cli_inputs import check_broker, parse_broker
    from host_tools.commands.platform.run import tls_options

    try:
        common.check_device_id(door)
    except common.ProtocolError:
        raise fail(f"--door {door!r} is not a device id (1-64 of A-Z a-z 0-9 - _ .)", EXIT_USAGE) from None
    if seconds < 0:
        raise fail(f"--seconds {seconds:g}: must be 0 or more", EXIT_USAGE)
    tls_options(tls_ca, tls_cert, tls_key)
    try:
        b = parse_broker(broker)
        check_broker(b, tls_ca is not None)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    lock = threading.Lock()
    heard = threading.Event()
    gone = threading.Event()  # stdout's reader went away (| head)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        heard.set()
        try:
            _, leaf = common.split_topic(msg.topic)
            rec = describe(leaf, bytes(msg.payload))
        except common.ProtocolError as e:
            rec = {"kind": "malformed", "topic": msg.topic, "reason": e.reason}
        if rec is None or gone.is_set():
            return
        with lock:
            try:
                if as_json:
                    typer.echo(json.dumps(rec))
                else:
                    stamp = time.strftime("%H:%M:%S")
                    for text in (line(rec) if rec["kind"] != "malformed"
                                 else [f"malformed message on {rec['topic']}: {rec['reason']}"]):
                        typer.echo(f"{stamp} {door} {text}")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                gone.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(common.topic(door, "#"), 1)
    try:
        from reference_platform.broker_acl import apply_env_login

        apply_env_login(client)  # an observer user (%NAME) with access control on
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    try:
        if tls_ca is not None:
            client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key)
    except (OSError, ValueError) as e:
        raise fail(f"--tls-ca/--tls-cert/--tls-key: cannot be used ({e})", EXIT_USAGE) from None
    try:
        client.connect(b.host, b.port)
    except ssl.SSLError as e:
        raise fail(f"TLS handshake with the broker at {b} failed: {e.reason or e}",
                   EXIT_UNREACHABLE) from None
    except OSError:
        raise fail(f"cannot reach the MQTT broker at {b}: is it running?", EXIT_UNREACHABLE) from None
    client.loop_start()
    start = time.monotonic()
    try:
        while not gone.is_set():
            if seconds and time.monotonic() - start >= seconds:
                break
            if not wait and not heard.is_set() and time.monotonic() - start >= FIRST_WORD_S:
                raise fail(f"--door {door}: the broker at {b} has nothing from this door (it never "
                           "connected there): check the id (doorctl platform doors), or pass --wait "
                           "for a new door", EXIT_USAGE)
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()
    if gone.is_set():
        raise BrokenPipeError


ESP_IMAGE_MAGIC = 0xE9
ESP32_OFFSET = "0x1000"  # where the ESP32's second-stage bootloader image starts


def flash(
    port: str = typer.Option(None, "--port", "-p", help="The ESP32's serial port (default: the one "
                             "USB serial port found)."),
    firmware: Path = typer.Option(None, "--firmware", help="Stock MicroPython for ESP32 (.bin) you "
                                  "supply; the door firmware is deployed as files after it."),
    image: Path = typer.Option(None, "--image", help="The door firmware image (firmware.bin of the "
                               "board/esp32 build, the application frozen in): written with the "
                               "repository's partition table, then verified."),
    baud: int = typer.Option(460800, help="Serial speed for writing."),
    deploy_after: bool = typer.Option(True, "--deploy/--no-deploy", help="With --firmware: deploy "
                                      "the door firmware after."),
) -> None:
    """Write MicroPython to an ESP32 with esptool (its progress shown). Nothing is downloaded.

    --image FILE: the door firmware image built from board/esp32 (docs/deploy.md). Its
    bootloader and application are written with the partition table of
    board/esp32_partitions.csv, then read back and compared (esptool verify-flash).

    --firmware FILE: a stock MicroPython for ESP32, then the door firmware deployed as files.

    Examples: doorctl flash -p /dev/ttyUSB0 --image build-DOORCTL_ESP32/firmware.bin

      doorctl flash -p /dev/ttyUSB0 --firmware ESP32_GENERIC-20250415-v1.25.0.bin
    """
    if (firmware is None) == (image is None):
        raise fail("give one of --image (the door firmware image) or --firmware (stock "
                   "MicroPython, then the door firmware as files)", EXIT_USAGE)
    if image is not None:
        _flash_image(port, image, baud)
        return
    assert firmware is not None
    try:
        data = firmware.read_bytes()[:1]
    except OSError:
        raise fail(f"--firmware {firmware}: cannot be read", EXIT_USAGE) from None
    if data != bytes([ESP_IMAGE_MAGIC]):
        raise fail(f"--firmware {firmware}: not an ESP32 firmware image (no 0xE9 header): use the "
                   ".bin of MicroPython for ESP32", EXIT_USAGE)
    from host_tools.console import check_port
    from host_tools.ports import pick_port

    try:
        port = pick_port(port)
        check_port(port)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    cmd = [sys.executable, "-m", "esptool", "--port", port, "--baud", str(baud), "write-flash",
           "-z", ESP32_OFFSET, str(firmware)]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise fail(f"esptool could not write the ESP32 on {port}: hold BOOT while it connects, "
                   "check the cable and that no other program uses the port", EXIT_NO_DEVICE)
    if deploy_after:
        from host_tools.commands.deploy import deploy_command

        time.sleep(2)  # the board boots MicroPython
        deploy_command(port=port, romfs=False, force_rom=False, board=None, as_json=False)


def _flash_image(port: str, image: Path, baud: int) -> None:
    import tempfile

    from host_tools.console import check_port
    from host_tools.image import esp32
    from host_tools.image.partitions import board_table
    from host_tools.ports import pick_port

    try:
        data = image.read_bytes()
    except OSError:
        raise fail(f"--image {image}: cannot be read", EXIT_USAGE) from None
    try:
        regions = esp32.split_image(data, board_table())
        port = pick_port(port)
        check_port(port)
    except UserError as e:
        raise fail(f"--image {image}: {e}" if e.exit_code == EXIT_USAGE else str(e), e.exit_code) from None
    with tempfile.TemporaryDirectory(prefix="doorctl-flash-") as tmp:
        write, verify = esp32.esptool_commands(port, baud, esp32.write_files(regions, Path(tmp)))
        if subprocess.run([sys.executable, "-m", "esptool", *write]).returncode != 0:
            raise fail(f"esptool could not write the ESP32 on {port}: hold BOOT while it connects, "
                       "check the cable and that no other program uses the port", EXIT_NO_DEVICE)
        if subprocess.run([sys.executable, "-m", "esptool", *verify]).returncode != 0:
            raise fail(f"the flash of the ESP32 on {port} does not read back as written: flash "
                       "again; if it persists the module's flash is failing", EXIT_FAILED)
    typer.echo(f"flashed and verified {image.name} with board/esp32_partitions.csv on {port}; "
               "commission it next (doorctl commission)")


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
    app.command("flash")(flash)
