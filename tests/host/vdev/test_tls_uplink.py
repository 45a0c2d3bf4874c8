"""The door's MQTT uplink over TLS, end to end: a real mosquitto with a TLS listener, the real
virtual door commissioned with `doorctl commission --tls-ca [--tls-cert --tls-key]` through its
console, the real platform ingest on SQLite over TLS. The CA and certificates are made for each
test (host_tools/services/tlsgen.py); nothing is downloaded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from host_tools.cards.kit import SiteKit
from host_tools.console import mpremote
from host_tools.image import source
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.services.mosquitto import Mosquitto, TLSListener
from host_tools.services.tlsgen import CA, Issued
from host_tools.vdev.device import VirtualDevice, selected_image
from host_tools.vdev.io_client import VirtualIO
from reference_platform.ingest import Platform
from reference_platform.store import Store

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
DEVICE = "tls.b1.d1"
ACCESS_DENIED = 2
# The virtual door's default. On the 64-bit port the firmware's bytecode is in the heap, and
# 256K ran out during a handshake (the TLS module and the certificates as they are decoded;
# mbedTLS's own buffers come from the C heap, as from the IDF heap on the ESP32) before the
# firmware made ~20 KiB of buffers at boot (uplink, cache updates). The 32-bit image needs
# far less (image.heap_min_tls_kib), and runs these tests in it too.
TLS_HEAP = "384K"


def doorctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="250")  # rich tables on one line each
    return subprocess.run([DOORCTL, *args], capture_output=True, text=True, timeout=timeout, env=env)


def wait_until(cond: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Rig:
    """A site's CA, a TLS broker signed by it, the platform (over TLS) and a virtual door."""

    def __init__(self, tmp: Path, require_certificate: bool = False,
                 image: str | None = None) -> None:
        self.tmp = tmp
        self.ca = CA(tmp / "pki")
        self.other_ca = CA(tmp / "pki-other", "another CA")
        self.server = self.ca.server()
        self.door_cert = self.ca.client(DEVICE)
        self.platform_cert = self.ca.client("platform")
        self.broker = Mosquitto(tls=TLSListener(self.ca.cert, self.server.cert, self.server.key,
                                                require_certificate)).start()
        self.store = Store(str(tmp / "p.db"))
        self.platform = Platform(self.store, self.broker.host, self.broker.port,
                                 tls_ca=str(self.ca.cert), tls_cert=str(self.platform_cert.cert),
                                 tls_key=str(self.platform_cert.key)).start()
        kit = SiteKit(2024)
        self.keys = tmp / "site.json"
        self.keys.write_text(json.dumps(kit.keys))
        self.dev = VirtualDevice(tmp / "door", heap=TLS_HEAP,
                                 image=image or selected_image()).start()

    def commission(self, *tls: str) -> subprocess.CompletedProcess[str]:
        return doorctl("commission", "-p", self.dev.pty, "--keys", str(self.keys), "--device-id",
                       DEVICE, "--door-no", "1", "--broker", f"{self.broker.host}:{self.broker.port}",
                       *tls)

    def commission_ok(self, *tls: str) -> None:
        r = self.commission(*tls)
        assert r.returncode == 0, r.stderr
        self.dev.restart()

    def status(self) -> dict[str, object]:
        with VirtualIO(self.dev.io_addr) as io:
            return io.status()

    def record(self, n: int, tag: bytes) -> None:
        """`n` access_denied events carrying `tag` + a number, straight into the journal."""
        mpremote(self.dev.pty, "exec", "from firmware.main import running\n"
                 f"for i in range({n}): running['recorder'].record(2, 1, {tag!r} + b'%02d' % i)")

    def tagged(self, tag: bytes) -> list[bytes]:
        return [bytes.fromhex(e[7]) for e in self.store.events(DEVICE)
                if e[1] == ACCESS_DENIED and bytes.fromhex(e[7]).startswith(tag)]

    def assert_exactly_once(self) -> None:
        last = int(mpremote(self.dev.pty, "exec", "from firmware.main import running\n"
                            "print(running['journal'].next_seq - 1)").strip())
        wait_until(lambda: self.store.ack_upto(DEVICE) >= last, what="every event acknowledged")
        seqs = [e[0] for e in self.store.events(DEVICE)]
        assert seqs == list(range(1, last + 1))  # each once, none missing
        assert self.store.missing(DEVICE) == []

    def close(self) -> None:
        self.dev.stop()
        self.platform.stop()
        self.broker.stop()


def tls_args(rig: Rig, ca: Path | None = None, client: Issued | None = None) -> list[str]:
    out = ["--tls-ca", str(ca or rig.ca.cert)]
    if client is not None:
        out += ["--tls-cert", str(client.cert), "--tls-key", str(client.key)]
    return out


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.fixture()
def mtls_rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, require_certificate=True)
    yield r
    r.close()


def test_events_reach_the_platform_over_tls_exactly_once(rig: Rig) -> None:
    rig.commission_ok(*tls_args(rig))
    wait_until(lambda: rig.status().get("uplink") == "connected", what="the TLS connection")
    assert rig.status().get("uplink_tls") is True
    rig.record(30, b"ok")
    wait_until(lambda: len(rig.tagged(b"ok")) == 30, what="30 events at the platform")
    rig.assert_exactly_once()
    assert (rig.store.device(DEVICE) or {}).get("online") is True
    # the door registered itself (retained `register`): what it was commissioned as, no keys
    wait_until(lambda: rig.store.registration(DEVICE) is not None, what="the registration")
    reg = rig.store.registration(DEVICE) or {}
    assert {k: reg[k] for k in ("site", "door", "fw", "lock", "cards", "tls", "client_cert")} == {
        "site": 2024, "door": 1, "fw": "0.1.0", "lock": "fail-secure", "cards": ["desfire_ev2"],
        "tls": True, "client_cert": False}
    assert abs(reg["commissioned_at"] - time.time()) < 600
    r = doorctl("platform", "doors", "--db", rig.store.url, "--json")
    assert r.returncode == 0, r.stderr
    (row,) = [d for d in json.loads(r.stdout) if d["door"] == DEVICE]
    assert row["registration"]["lock"] == "fail-secure" and row["registration"]["tls"] is True
    table = doorctl("platform", "doors", "--db", rig.store.url, "--detail")
    assert "site 2024 door 1, fail-secure, desfire_ev2, TLS, fw 0.1.0" in table.stdout
    # the same broker does not answer plain MQTT: the door really used TLS
    with socket.create_connection((rig.broker.host, rig.broker.port), timeout=3) as sock:
        sock.sendall(bytes.fromhex("100c00044d5154540402001e0000"))  # CONNECT, client id ""
        try:
            answer = sock.recv(4)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert answer[:1] != b"\x20"  # no CONNACK


@pytest.mark.parametrize("image", ["pypi", "unix32"])
def test_a_door_with_its_reader_link_connected_gets_its_swipes_to_the_platform_over_tls(
        tmp_path: Path, image: str, request: pytest.FixtureRequest) -> None:
    """The reader link (the PN532 emulator's TCP connection) and the I/O channel beside the
    broker's TLS connection: five sockets at once in the door's event loop. asyncio's own TLS
    stream had the loop poll the TLS socket, which the unix port loses track of when its poll
    set grows (firmware/tlsstream.py): the handshake never ended, or the door crashed."""
    if image == "unix32":
        if source.vendored_tarball() is None:
            pytest.skip("no MicroPython source here for the unix32 image")
        request.getfixturevalue("unix32_binary")
    rig = Rig(tmp_path, image=image)
    try:
        rig.commission_ok(*tls_args(rig))
        emu = PN532Emulator()
        stranger = SiteKit(2025).issue()[0]
        with emu.connect(rig.dev.reader_addr), VirtualIO(rig.dev.io_addr) as io:
            wait_until(lambda: str(io.status().get("reader", "")).startswith("pn532"),
                       what="the reader")
            wait_until(lambda: io.status().get("uplink") == "connected", what="the TLS connection")
            assert io.status().get("uplink_tls") is True
            emu.present(LocalCard(stranger.process, stranger.uid))
            wait_until(lambda: any(e[1] == ACCESS_DENIED for e in rig.store.events(DEVICE)),
                       what="the refused swipe at the platform")
            emu.remove()
            rig.record(5, b"rd")
            wait_until(lambda: len(rig.tagged(b"rd")) == 5, what="5 more events at the platform")
            assert io.status().get("uplink") == "connected"
        assert rig.dev.alive()
        rig.assert_exactly_once()
    finally:
        rig.close()


def test_wrong_ca_is_named_events_are_kept_and_delivered_after_recommissioning(
        rig: Rig, tmp_path: Path) -> None:
    rig.commission_ok(*tls_args(rig, ca=rig.other_ca.cert))
    rig.record(12, b"kept")
    wait_until(lambda: int(rig.status().get("tls_failures") or 0) >= 2, what="retried TLS failures")
    st = rig.status()
    assert st["uplink"] == "failed"
    assert st["uplink_error"] == "TLS handshake failed: certificate not trusted by the door's CA"
    assert rig.store.events(DEVICE) == []  # nothing got through...
    depth = int(mpremote(rig.dev.pty, "exec", "from firmware.main import running\n"
                         "print(running['journal'].depth())").strip())
    assert depth >= 13  # ...and the door keeps every event (boot + 12)
    logs = doorctl("logs", "-p", rig.dev.pty)
    assert "uplink: TLS handshake failed: certificate not trusted by the door's CA" in logs.stdout
    assert "BEGIN" not in logs.stdout  # no certificate or key text in the log
    # (e) the self-test says why, not just "unreachable"
    r = doorctl("selftest", "-p", rig.dev.pty, "--relay", "skip", "--report-dir",
                str(tmp_path / "reports"), "--json")
    items = {i["item"]: i for i in json.loads(r.stdout)["items"]}
    assert r.returncode == 1 and items["broker"]["result"] == "fail"
    assert items["broker"]["detail"].startswith(
        "TLS handshake failed: certificate not trusted by the door's CA"), items["broker"]
    # the installer commissions again with the right CA (in a bundle with the old one, as in a
    # CA change-over: each certificate of the file is trusted): every kept event arrives, once
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(rig.other_ca.cert.read_bytes() + rig.ca.cert.read_bytes())
    rig.commission_ok(*tls_args(rig, ca=bundle))
    wait_until(lambda: len(rig.tagged(b"kept")) == 12, what="the kept events")
    rig.assert_exactly_once()
    r = doorctl("selftest", "-p", rig.dev.pty, "--relay", "skip", "--report-dir",
                str(tmp_path / "reports"), "--json")
    items = {i["item"]: i for i in json.loads(r.stdout)["items"]}
    assert items["broker"]["result"] == "pass"
    assert items["broker"]["detail"] == "connected with TLS (broker certificate checked)"


def test_a_broker_restarted_with_the_right_certificate_gets_the_kept_events(rig: Rig) -> None:
    wrong = rig.other_ca.server("wrong-server")
    rig.broker.tls = TLSListener(rig.ca.cert, wrong.cert, wrong.key)
    rig.broker.restart()
    rig.commission_ok(*tls_args(rig))
    rig.record(8, b"wait")
    wait_until(lambda: int(rig.status().get("tls_failures") or 0) >= 1, what="a TLS failure")
    assert "not trusted by the door's CA" in str(rig.status()["uplink_error"])
    rig.broker.tls = TLSListener(rig.ca.cert, rig.server.cert, rig.server.key)
    rig.broker.restart()  # the door retries on its own (backoff): no restart, no commissioning
    wait_until(lambda: len(rig.tagged(b"wait")) == 8, timeout=60, what="the kept events")
    rig.assert_exactly_once()


def test_a_certificate_for_another_host_is_refused_by_name(rig: Rig) -> None:
    other_host = rig.ca.server("elsewhere", hosts=("broker.example",))
    rig.broker.tls = TLSListener(rig.ca.cert, other_host.cert, other_host.key)
    rig.broker.restart()
    rig.commission_ok(*tls_args(rig))
    wait_until(lambda: int(rig.status().get("tls_failures") or 0) >= 1, what="a TLS failure")
    assert rig.status()["uplink_error"] == \
        "TLS handshake failed: the broker's certificate is not for 127.0.0.1"


def test_mutual_tls_with_and_without_the_door_certificate(mtls_rig: Rig) -> None:
    rig = mtls_rig
    wait_until(rig.platform.connected.is_set, what="the platform (with its client certificate)")
    rig.commission_ok(*tls_args(rig))  # no client certificate: the broker refuses the door
    rig.record(5, b"mtls")
    wait_until(lambda: int(rig.status().get("tls_failures") or 0) >= 2, what="TLS failures")
    why = str(rig.status()["uplink_error"])
    assert why.startswith("TLS handshake failed: the broker closed the connection")
    assert "client certificate, which the door does not have" in why
    assert rig.store.events(DEVICE) == []
    r = rig.commission(*tls_args(rig, client=rig.door_cert))
    assert r.returncode == 0, r.stderr
    assert "BEGIN" not in r.stdout + r.stderr  # the key is never echoed
    rig.dev.restart()  # the commissioning takes effect as the door boots
    shown = mpremote(rig.dev.pty, "exec", "import json\n"
                     "print(json.dumps(json.load(open('config.json'))['broker']))")
    broker_cfg = json.loads(shown)
    assert broker_cfg["ca"] == "ca.pem" and broker_cfg["cert"] == "client.crt"
    assert broker_cfg["key"] == "client.key"
    wait_until(lambda: len(rig.tagged(b"mtls")) == 5, what="the kept events over mutual TLS")
    rig.assert_exactly_once()
    wait_until(lambda: (rig.store.registration(DEVICE) or {}).get("client_cert") is True,
               what="the registration with its client certificate")
    # the installer watches it over mutual TLS too; the retained messages come first
    base = ["monitor", "--door", DEVICE, "--broker", f"{rig.broker.host}:{rig.broker.port}",
            "--seconds", "2", "--json", "--tls-ca", str(rig.ca.cert)]
    r = doorctl(*base, "--tls-cert", str(rig.platform_cert.cert), "--tls-key",
                str(rig.platform_cert.key))
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert any(x["kind"] == "presence" and x["online"] for x in recs), r.stdout + r.stderr
    assert any(x["kind"] == "register" and x["client_cert"] is True for x in recs), r.stdout
    r = doorctl("monitor", "--door", DEVICE, "--broker", f"{rig.broker.host}:{rig.broker.port}",
                "--seconds", "1", "--tls-ca", str(rig.other_ca.cert))
    assert r.returncode == 4 and "TLS handshake with the broker" in r.stderr, r.stderr
    # commissioning again without a client certificate takes it off the door
    rig.commission_ok(*tls_args(rig))
    files = mpremote(rig.dev.pty, "exec", "import os\nprint(os.listdir())")
    assert "client.key" not in files and "client.crt" not in files and "ca.pem" in files


def test_commission_refuses_bad_tls_files_before_writing_anything(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    door = ca.client(DEVICE)
    other = ca.client("someone-else")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello, not a certificate\n")
    kit = SiteKit(2024)
    keys = tmp_path / "site.json"
    keys.write_text(json.dumps(kit.keys))
    secret = door.key.read_text().splitlines()[1]  # a line of the private key
    with VirtualDevice(tmp_path / "door") as dev:
        cases = [
            (["--tls-ca", str(ca.cert), "--tls-cert", str(door.cert), "--tls-key", str(other.key)],
             f"--tls-key {other.key}: does not belong to the certificate --tls-cert {door.cert}"),
            (["--tls-ca", str(junk)], f"--tls-ca {junk}: not a PEM file"),
            (["--tls-ca", str(ca.cert), "--tls-cert", str(junk), "--tls-key", str(door.key)],
             f"--tls-cert {junk}: not a PEM file"),
            (["--tls-ca", str(ca.cert), "--tls-cert", str(door.cert), "--tls-key", str(door.cert)],
             f"--tls-key {door.cert}: not a PEM private key"),
            (["--tls-ca", str(ca.cert), "--tls-cert", str(door.cert)], "--tls-cert/--tls-key: give both"),
            (["--tls-cert", str(door.cert), "--tls-key", str(door.key)], "needs --tls-ca"),
            (["--tls-ca", str(door.key)], f"--tls-ca {door.key}: not a PEM certificate"),
        ]
        for args, message in cases:
            r = doorctl("commission", "-p", dev.pty, "--keys", str(keys), "--device-id", DEVICE,
                        "--door-no", "1", "--broker", "127.0.0.1:8883", *args)
            assert r.returncode == 2, (args, r.stdout, r.stderr)
            assert message in " ".join(r.stderr.split()), (args, r.stderr)
            assert secret not in r.stdout + r.stderr
        files = mpremote(dev.pty, "exec", "import os\nprint(os.listdir())")
        for name in ("config.json", "keys.json", "ca.pem", "client.crt", "client.key"):
            assert name not in files, files


def test_platform_and_monitor_check_their_tls_options(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    me = ca.client("platform")
    cases = [
        (["platform", "run", "--broker", "127.0.0.1:1", "--db", str(tmp_path / "p.db"),
          "--tls-ca", str(ca.cert), "--tls-cert", str(me.cert)], "--tls-cert/--tls-key: give both"),
        (["platform", "run", "--broker", "127.0.0.1:1", "--db", str(tmp_path / "p.db"),
          "--tls-cert", str(me.cert), "--tls-key", str(me.key)], "--tls-cert needs --tls-ca"),
        (["monitor", "--door", DEVICE, "--broker", "127.0.0.1:1", "--seconds", "1",
          "--tls-ca", str(tmp_path / "missing.pem")], f"--tls-ca {tmp_path / 'missing.pem'}: cannot be read"),
    ]
    for args, message in cases:
        r = doorctl(*args, timeout=30)
        assert r.returncode == 2 and message in " ".join(r.stderr.split()), (args, r.stderr)
